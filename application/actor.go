// Package application holds the use cases of TaskPod Billing: saving cards,
// creating and settling paid tasks, and running the money steps the outbox
// relays. It depends only on the domain and on ports.
package application

import "context"

// Role is the set of routes a bearer token may call.
type Role string

// Roles.
const (
	RoleCustomer Role = "customer"
	RoleAgent    Role = "agent"
	RoleAuditor  Role = "auditor"
	RoleAdmin    Role = "admin"
	// RoleSystem is the service itself: relay, schedulers, webhooks.
	RoleSystem Role = "system"
)

// Actor is who asks for a use case: a token's role and subject, or the
// system. Subject is the customer's user id or the agent's id.
type Actor struct {
	Role      Role
	Subject   string
	TokenID   string
	RequestID string
}

// Name identifies the actor in ledger and audit records.
func (a Actor) Name() string {
	if a.TokenID != "" {
		return a.TokenID
	}
	return string(a.Role)
}

type actorKey struct{}

// WithActor returns a context carrying the actor.
func WithActor(ctx context.Context, a Actor) context.Context {
	return context.WithValue(ctx, actorKey{}, a)
}

// ActorFrom returns the context's actor, or the system actor.
func ActorFrom(ctx context.Context) Actor {
	if a, ok := ctx.Value(actorKey{}).(Actor); ok {
		return a
	}
	return Actor{Role: RoleSystem}
}
