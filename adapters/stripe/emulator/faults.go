package emulator

import (
	"fmt"
	"math/rand/v2"
	"strings"
	"sync"
	"time"
)

// faultRule is one fault injection rule of POST /_emulator/faults.
type faultRule struct {
	ID int `json:"id"`
	// Method matches the request method; empty matches any.
	Method string `json:"method"`
	// Path matches the request path; "*" matches one path segment.
	Path string `json:"path"`
	// Status is the HTTP status of an injected failure, 500 by default.
	Status int `json:"status"`
	// Rate is the probability of responding with Status without any effect.
	Rate float64 `json:"rate"`
	// DropResponseRate is the probability of applying the request and then
	// closing the connection without a response.
	DropResponseRate float64 `json:"dropResponseRate"`
	// LatencyMs delays every matching request by this many milliseconds.
	LatencyMs int64 `json:"latencyMs"`
	// Count, when set, is how many more failures or drops the rule injects
	// before it is removed.
	Count *int64 `json:"count,omitempty"`
	// Seed, when set, reseeds the shared random source when the rule is
	// added, so a test gets the same sequence of outcomes on every run.
	Seed *uint64 `json:"seed,omitempty"`
}

func (f *faultRule) validate() error {
	if f.Path == "" {
		return fmt.Errorf("path is required, for example \"/v1/payment_intents/*/capture\"")
	}
	if f.Rate < 0 || f.Rate > 1 || f.DropResponseRate < 0 || f.DropResponseRate > 1 {
		return fmt.Errorf("rate and dropResponseRate must be between 0 and 1, got %v and %v", f.Rate, f.DropResponseRate)
	}
	if f.Status == 0 {
		f.Status = 500
	}
	if f.Status < 400 || f.Status > 599 {
		return fmt.Errorf("status must be an HTTP error status between 400 and 599, got %d", f.Status)
	}
	if f.LatencyMs < 0 {
		return fmt.Errorf("latencyMs must not be negative, got %d", f.LatencyMs)
	}
	if f.Count != nil && *f.Count < 1 {
		return fmt.Errorf("count must be at least 1 when set, got %d", *f.Count)
	}
	f.Method = strings.ToUpper(f.Method)
	return nil
}

func (f *faultRule) matches(method, path string) bool {
	if f.Method != "" && f.Method != method {
		return false
	}
	return pathMatches(f.Path, path)
}

// pathMatches compares slash-separated segments; "*" in pattern matches any
// one segment.
func pathMatches(pattern, path string) bool {
	want := strings.Split(strings.Trim(pattern, "/"), "/")
	got := strings.Split(strings.Trim(path, "/"), "/")
	if len(want) != len(got) {
		return false
	}
	for i := range want {
		if want[i] != "*" && want[i] != got[i] {
			return false
		}
	}
	return true
}

// faultSet holds the active rules in memory. They are test configuration,
// not Stripe state, so unlike objects they do not survive a restart.
type faultSet struct {
	mu     sync.Mutex
	rng    *rand.Rand
	rules  []*faultRule
	nextID int
}

func newFaultSet(seed uint64) *faultSet {
	return &faultSet{rng: rand.New(rand.NewPCG(seed, seed))}
}

// faultOutcome is the decision of the first matching rule for one request.
type faultOutcome struct {
	id      int
	latency time.Duration
	fail    bool
	status  int
	drop    bool
}

func (s *faultSet) add(rule faultRule) (faultRule, error) {
	if err := rule.validate(); err != nil {
		return faultRule{}, err
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if rule.Seed != nil {
		s.rng = rand.New(rand.NewPCG(*rule.Seed, *rule.Seed))
	}
	s.nextID++
	rule.ID = s.nextID
	s.rules = append(s.rules, &rule)
	return rule, nil
}

func (s *faultSet) list() []faultRule {
	s.mu.Lock()
	defer s.mu.Unlock()
	out := make([]faultRule, 0, len(s.rules))
	for _, r := range s.rules {
		out = append(out, *r)
	}
	return out
}

func (s *faultSet) clear() {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.rules = nil
}

// decide draws the outcome for one request. Only the first matching rule
// applies. A failure excludes a drop.
func (s *faultSet) decide(method, path string) faultOutcome {
	s.mu.Lock()
	defer s.mu.Unlock()
	for i, rule := range s.rules {
		if !rule.matches(method, path) {
			continue
		}
		out := faultOutcome{id: rule.ID, latency: time.Duration(rule.LatencyMs) * time.Millisecond, status: rule.Status}
		if rule.Rate > 0 && s.rng.Float64() < rule.Rate {
			out.fail = true
		} else if rule.DropResponseRate > 0 && s.rng.Float64() < rule.DropResponseRate {
			out.drop = true
		}
		if (out.fail || out.drop) && rule.Count != nil {
			*rule.Count--
			if *rule.Count == 0 {
				s.rules = append(s.rules[:i:i], s.rules[i+1:]...)
			}
		}
		return out
	}
	return faultOutcome{}
}
