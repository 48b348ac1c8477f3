package main

import (
	"encoding/binary"
	"fmt"
	"os"
	"runtime"
)

// tinyCode is the whole of the per-connection program, in x86-64 machine
// code: read(0, buf, 128); write(1, buf, n); exit(0), or exit(1) when the
// read fails. It is the smallest honest "trivial per-connection program":
// no libc, no dynamic loader, no runtime, so what the benchmarks measure is
// the server's accept→spawn→reap path and the kernel's fork+exec, not a
// program's start-up. As a stream service it echoes the client's request
// line, which lets the load generator check that every reply is its own;
// with /dev/null as stdin it is the spawn ceiling's "true".
var tinyCode = []byte{
	0x31, 0xc0, // xor eax, eax            ; SYS_read
	0x31, 0xff, // xor edi, edi            ; fd 0
	0x48, 0x8d, 0x74, 0x24, 0x80, // lea rsi, [rsp-128]    ; buffer below the stack pointer
	0xba, 0x80, 0x00, 0x00, 0x00, // mov edx, 128
	0x0f, 0x05, // syscall
	0x48, 0x89, 0xc2, // mov rdx, rax          ; n
	0x48, 0x85, 0xd2, // test rdx, rdx
	0x78, 0x10, // js fail
	0xb8, 0x01, 0x00, 0x00, 0x00, // mov eax, 1            ; SYS_write
	0xbf, 0x01, 0x00, 0x00, 0x00, // mov edi, 1            ; fd 1
	0x0f, 0x05, // syscall
	0x31, 0xff, // xor edi, edi            ; status 0
	0xeb, 0x05, // jmp exit
	0xbf, 0x01, 0x00, 0x00, 0x00, // fail: mov edi, 1      ; status 1
	0xb8, 0xe7, 0x00, 0x00, 0x00, // exit: mov eax, 231    ; SYS_exit_group
	0x0f, 0x05, // syscall
}

// trueCode is exit(0), and nothing else: the service that the restart
// benchmark's supervisors restart as fast as they will.
var trueCode = []byte{
	0x31, 0xff, // xor edi, edi            ; status 0
	0xb8, 0xe7, 0x00, 0x00, 0x00, // mov eax, 231          ; SYS_exit_group
	0x0f, 0x05, // syscall
}

// writeTiny writes code as a static ELF executable to path.
func writeTiny(path string, code []byte) error {
	if runtime.GOARCH != "amd64" {
		return fmt.Errorf("cannot build the tiny program for %s: only amd64 is written", runtime.GOARCH)
	}
	const (
		base    = 0x400000
		ehsize  = 64
		phsize  = 56
		codeOff = ehsize + phsize
	)
	size := uint64(codeOff + len(code))
	b := make([]byte, codeOff, size)
	le := binary.LittleEndian
	copy(b, "\x7fELF\x02\x01\x01") // 64-bit, little endian, version 1, System V
	le.PutUint16(b[16:], 2)        // ET_EXEC
	le.PutUint16(b[18:], 62)       // EM_X86_64
	le.PutUint32(b[20:], 1)        // EV_CURRENT
	le.PutUint64(b[24:], base+codeOff)
	le.PutUint64(b[32:], ehsize) // program headers right after this header
	le.PutUint16(b[52:], ehsize)
	le.PutUint16(b[54:], phsize)
	le.PutUint16(b[56:], 1) // one program header
	ph := b[ehsize:]
	le.PutUint32(ph[0:], 1)     // PT_LOAD
	le.PutUint32(ph[4:], 5)     // PF_R|PF_X
	le.PutUint64(ph[16:], base) // vaddr
	le.PutUint64(ph[24:], base) // paddr
	le.PutUint64(ph[32:], size) // filesz
	le.PutUint64(ph[40:], size) // memsz
	le.PutUint64(ph[48:], 0x1000)
	b = append(b, code...)
	return os.WriteFile(path, b, 0o755)
}
