# bash completion for metad and metac (one binary, two names).
#
# make install puts this file in bash-completion's directory under both
# names, metad and metac. By hand: source completion/metad.bash
#
# Commands and options come from "metac --help" of the binary being
# completed, so they follow the version installed; service names come
# from the running metad ("metac --json list", read without jq), through
# the socket or hosts named on the command line so far.

# _metac_help_words SECTION PROGRAM... prints the first word of each
# indented line of "PROGRAM... --help" in SECTION: commands (after the
# line "Commands:") or options (before it, lines that start with -).
_metac_help_words() {
	local section=$1
	shift
	"$@" --help 2>/dev/null | awk -v want="$section" '
		/^Commands:/ { c = 1; next }
		c && want == "commands" && /^  [a-z]/ { print $1 }
		!c && want == "options" && /^  -/ { print $1 }'
}

# _metac_services PROGRAM ARGS... prints the names of the services of the
# metad that PROGRAM ARGS reaches (ARGS: the target options typed so far).
_metac_services() {
	# One object per host: {"host":...,"name":HOSTNAME,...,"services":[{"name":...
	"$@" -t 1s --json list 2>/dev/null | sed 's/^.*"services":\[//' |
		grep -o '"name":"[A-Za-z0-9_.-]*"' | cut -d '"' -f 4 | sort -u
}

# _metac_complete completes a metac command line whose words (after the
# program name) start at index $1 of COMP_WORDS; the program to run for
# help and services is the rest of the arguments (metac, or metad ctl).
_metac_complete() {
	local first=$1
	shift
	local cur=${COMP_WORDS[COMP_CWORD]} prev=${COMP_WORDS[COMP_CWORD-1]}
	local i word cmd= cmdat=0 target=()
	for ((i = first; i < COMP_CWORD; i++)); do
		word=${COMP_WORDS[i]}
		case $word in
		-s | -h | -p | -k | -r | --hosts)
			target+=("$word" "${COMP_WORDS[i+1]}")
			((i++))
			;;
		-t | --serial | --ready-wait) ((i++)) ;;
		-*) ;;
		*)
			if [ -z "$cmd" ]; then
				cmd=$word
				cmdat=$i
			fi
			;;
		esac
	done
	case $prev in
	-s | -k | --hosts)
		COMPREPLY=($(compgen -f -- "$cur"))
		return
		;;
	-h | -r | -b)
		COMPREPLY=($(compgen -A hostname -- "$cur"))
		return
		;;
	-p | -t | --serial | --ready-wait) return ;;
	esac
	if [[ $cur == -* ]]; then
		COMPREPLY=($(compgen -W "$(_metac_help_words options "$@") --help --version" -- "$cur"))
		return
	fi
	if [ -z "$cmd" ]; then
		COMPREPLY=($(compgen -W "$(_metac_help_words commands "$@")" -- "$cur"))
		return
	fi
	case $cmd in
	kill)
		# kill SERVICE [SIGNAL]
		if ((COMP_CWORD - cmdat >= 2)); then
			COMPREPLY=($(compgen -W "TERM HUP INT QUIT KILL USR1 USR2 STOP CONT" -- "$cur"))
			return
		fi
		;;
	start)
		((COMP_CWORD - cmdat >= 2)) && return
		;;
	reload | version | reexec | shutdown | poweroff | reboot | halt) return ;;
	esac
	COMPREPLY=($(compgen -W "$(_metac_services "$@" "${target[@]}")" -- "$cur"))
}

_metac() {
	_metac_complete 1 "${COMP_WORDS[0]}"
}

_metad() {
	local cur=${COMP_WORDS[COMP_CWORD]} prev=${COMP_WORDS[COMP_CWORD-1]} i
	if [ "${COMP_WORDS[1]}" = ctl ] && ((COMP_CWORD >= 2)); then
		_metac_complete 2 "${COMP_WORDS[0]}" ctl
		return
	fi
	for ((i = 1; i < COMP_CWORD; i++)); do
		if [ "${COMP_WORDS[i]}" = -- ]; then
			# command mode: complete the command and its arguments
			if ((COMP_CWORD == i + 1)); then
				COMPREPLY=($(compgen -c -- "$cur"))
			else
				COMPREPLY=($(compgen -f -- "$cur"))
			fi
			return
		fi
	done
	case $prev in
	-f | -s | -k)
		COMPREPLY=($(compgen -f -- "$cur"))
		return
		;;
	--log-format | -log-format)
		COMPREPLY=($(compgen -W "console json" -- "$cur"))
		return
		;;
	--log-level | -log-level)
		COMPREPLY=($(compgen -W "trace debug info warn error" -- "$cur"))
		return
		;;
	-p | --stop-timeout | -stop-timeout | --metrics | -metrics) return ;;
	esac
	if ((COMP_CWORD == 1)) && [[ $cur != -* ]]; then
		COMPREPLY=($(compgen -W "ctl --" -- "$cur"))
		return
	fi
	COMPREPLY=($(compgen -W "-f -n -v -s -p -k -g -V -h --stop-timeout --log-format --log-level --metrics --help --version --" -- "$cur"))
}

complete -F _metac metac
complete -F _metad metad
