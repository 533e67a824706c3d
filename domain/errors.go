package domain

import (
	"errors"
	"fmt"
)

// Sentinel errors that the HTTP adapter maps to statuses and error codes.
var (
	// ErrNotFound marks a missing entity, or one the caller may not see.
	ErrNotFound = errors.New("not found")
	// ErrInvalidTransition marks a state change the state machine forbids.
	ErrInvalidTransition = errors.New("invalid state transition")
	// ErrConflict marks a request that collides with the current state.
	ErrConflict = errors.New("conflict")
)

// ValidationError names the input field that is wrong and how to fix it.
type ValidationError struct {
	Field   string
	Code    string
	Message string
}

func (e *ValidationError) Error() string {
	return fmt.Sprintf("%s: %s", e.Field, e.Message)
}

// Invalid builds a ValidationError for field with a stable code.
func Invalid(field, code, format string, args ...any) error {
	return &ValidationError{Field: field, Code: code, Message: fmt.Sprintf(format, args...)}
}

// TransitionError names the entity, the state it was in and the forbidden target.
type TransitionError struct {
	Entity string
	From   string
	To     string
}

func (e *TransitionError) Error() string {
	return fmt.Sprintf("%s cannot move from %s to %s", e.Entity, e.From, e.To)
}

// Unwrap lets errors.Is match ErrInvalidTransition.
func (e *TransitionError) Unwrap() error { return ErrInvalidTransition }
