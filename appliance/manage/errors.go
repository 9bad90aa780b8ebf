package manage

import (
	"errors"
	"fmt"
	"net/http"

	"sigillo/storage"
)

// Code classifies a refusal the same way for every transport.
type Code string

// The refusals an operation can meet.
const (
	// Invalid: the request itself is wrong (a short password, a bad size,
	// a malformed name or LDIF file).
	Invalid Code = "invalid"
	// NotFound: the domain or mailbox named does not exist.
	NotFound Code = "not_found"
	// Conflict: the request contradicts the state (the name exists, the
	// domain still has mailboxes).
	Conflict Code = "conflict"
	// Forbidden: the actor may not do this.
	Forbidden Code = "forbidden"
	// Unavailable: the server cannot do it now (no leader, the store
	// failing); trying again later may work.
	Unavailable Code = "unavailable"
)

// Error is an operation's refusal: a code for programs and one line for
// the user. Message is what the user reads, whatever the transport.
type Error struct {
	Code    Code
	Message string
	err     error // the cause, when there is one
}

func (e *Error) Error() string { return e.Message }
func (e *Error) Unwrap() error { return e.err }

// HTTPStatus is the admin API's status for the refusal.
func (c Code) HTTPStatus() int {
	switch c {
	case Invalid:
		return http.StatusBadRequest
	case NotFound:
		return http.StatusNotFound
	case Conflict:
		return http.StatusConflict
	case Forbidden:
		return http.StatusForbidden
	}
	return http.StatusServiceUnavailable
}

// ExitStatus is the command line's exit status for the refusal, in the
// spirit of sysexits(3): 65 data error, 66 no such input, 73 cannot
// create, 77 no permission, 75 temporary failure. (The command line still
// exits 1 for every failure until it reads the code from the response.)
func (c Code) ExitStatus() int {
	switch c {
	case Invalid:
		return 65
	case NotFound:
		return 66
	case Conflict:
		return 73
	case Forbidden:
		return 77
	}
	return 75
}

// CodeOf is err's code: an *Error's own, or Unavailable for any other
// failure (a dependency, not the request, failed).
func CodeOf(err error) Code {
	var e *Error
	if errors.As(err, &e) {
		return e.Code
	}
	return Unavailable
}

func refuse(code Code, format string, args ...any) *Error {
	return &Error{Code: code, Message: fmt.Sprintf(format, args...)}
}

func invalid(format string, args ...any) *Error   { return refuse(Invalid, format, args...) }
func forbidden(format string, args ...any) *Error { return refuse(Forbidden, format, args...) }

// wrap classifies err, keeping its message: a store refusal by its code,
// anything else as Unavailable. code is used for errors that are the
// request's fault but carry no code (a parser's).
func wrap(err error, code Code) error {
	if err == nil {
		return nil
	}
	var e *Error
	if errors.As(err, &e) {
		return err
	}
	var se *storage.Error
	if errors.As(err, &se) {
		switch se.Code {
		case storage.ErrNotFound:
			code = NotFound
		case storage.ErrExists, storage.ErrNotEmpty, storage.ErrConflict:
			code = Conflict
		default:
			code = Invalid
		}
	}
	return &Error{Code: code, Message: err.Error(), err: err}
}

// applyErr classifies a failure of Apply: a refusal by its code, anything
// else (no leader, a timeout, the disk) as Unavailable.
func applyErr(err error) error { return wrap(err, Unavailable) }
