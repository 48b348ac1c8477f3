#include "textflag.h"

// func startEntry()
// The process's first instruction: no Go runtime yet, no stack frame of
// our own. It clobbers only registers that _rt0_amd64_linux does not read
// (it reads argc and argv from the stack).
TEXT ·startEntry(SB),NOSPLIT|NOFRAME,$0
	MOVQ	$1, R12 // signal number
next:
	MOVQ	$13, AX // rt_sigaction(R12, NULL, &startActs[R12], 8)
	MOVQ	R12, DI
	MOVQ	$0, SI
	LEAQ	·startActs(SB), DX
	MOVQ	R12, R13
	SHLQ	$5, R13 // 32 bytes each
	ADDQ	R13, DX
	MOVQ	$8, R10
	SYSCALL
	INCQ	R12
	CMPQ	R12, $65
	JNE	next
	MOVQ	$14, AX // rt_sigprocmask(SIG_BLOCK, NULL, &startMask, 8)
	MOVQ	$0, DI
	MOVQ	$0, SI
	LEAQ	·startMask(SB), DX
	MOVQ	$8, R10
	SYSCALL
	MOVQ	$1, ·startSaved(SB)
	JMP	_rt0_amd64_linux(SB)
