package cli

import (
	"os"
	"syscall"
	"unsafe"
)

func termios(f *os.File, req uintptr, t *syscall.Termios) error {
	if _, _, errno := syscall.Syscall(syscall.SYS_IOCTL, f.Fd(), req, uintptr(unsafe.Pointer(t))); errno != 0 {
		return errno
	}
	return nil
}

// isTerminal says whether f is a terminal (a tty answers TCGETS).
func isTerminal(f *os.File) bool {
	var t syscall.Termios
	return termios(f, syscall.TCGETS, &t) == nil
}

// echoOff turns off the echo of the terminal f and returns how to turn
// it back on.
func echoOff(f *os.File) (restore func(), err error) {
	var old syscall.Termios
	if err := termios(f, syscall.TCGETS, &old); err != nil {
		return nil, err
	}
	t := old
	t.Lflag &^= syscall.ECHO
	if err := termios(f, syscall.TCSETS, &t); err != nil {
		return nil, err
	}
	return func() { termios(f, syscall.TCSETS, &old) }, nil
}
