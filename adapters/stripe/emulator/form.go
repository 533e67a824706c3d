package emulator

import (
	"fmt"
	"net/url"
	"sort"
	"strconv"
	"strings"
)

// params is a request's form or query parameters decoded from Stripe's
// bracket notation into a tree. A node is either a string leaf or a map of
// children. List items are children keyed by their index: "expand[0]" and
// "expand[]" both become children of "expand".
type params struct {
	root map[string]any
}

// parseParams decodes bracket-notation keys such as metadata[order]=1,
// expand[0]=latest_charge and expand[]=customer.
func parseParams(values url.Values) (*params, error) {
	p := &params{root: map[string]any{}}
	keys := make([]string, 0, len(values))
	for k := range values {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	for _, key := range keys {
		path, err := splitKey(key)
		if err != nil {
			return nil, err
		}
		for i, value := range values[key] {
			segments := path
			if path[len(path)-1] == "" {
				// "a[]" repeated: give each value its own index.
				segments = append(append([]string(nil), path[:len(path)-1]...), strconv.Itoa(i))
			}
			if err := p.set(key, segments, value); err != nil {
				return nil, err
			}
		}
	}
	return p, nil
}

func splitKey(key string) ([]string, error) {
	open := strings.IndexByte(key, '[')
	if open < 0 {
		return []string{key}, nil
	}
	segments := []string{key[:open]}
	rest := key[open:]
	for rest != "" {
		if rest[0] != '[' {
			return nil, fmt.Errorf("invalid parameter name %q", key)
		}
		end := strings.IndexByte(rest, ']')
		if end < 0 {
			return nil, fmt.Errorf("invalid parameter name %q: missing ']'", key)
		}
		segments = append(segments, rest[1:end])
		rest = rest[end+1:]
	}
	if segments[0] == "" {
		return nil, fmt.Errorf("invalid parameter name %q", key)
	}
	for _, s := range segments[:len(segments)-1] {
		if s == "" {
			return nil, fmt.Errorf("invalid parameter name %q: '[]' is only allowed at the end", key)
		}
	}
	return segments, nil
}

func (p *params) set(key string, segments []string, value string) error {
	node := p.root
	for _, s := range segments[:len(segments)-1] {
		child, ok := node[s]
		if !ok {
			m := map[string]any{}
			node[s] = m
			node = m
			continue
		}
		m, ok := child.(map[string]any)
		if !ok {
			return fmt.Errorf("invalid parameter %q: %q is both a value and a hash", key, s)
		}
		node = m
	}
	last := segments[len(segments)-1]
	if _, ok := node[last].(map[string]any); ok {
		return fmt.Errorf("invalid parameter %q: %q is both a value and a hash", key, last)
	}
	node[last] = value
	return nil
}

// lookup returns the node at path, or nil when it is absent.
func (p *params) lookup(path ...string) any {
	var node any = p.root
	for _, s := range path {
		m, ok := node.(map[string]any)
		if !ok {
			return nil
		}
		node, ok = m[s]
		if !ok {
			return nil
		}
	}
	return node
}

// has reports whether the parameter at path was sent, even if empty.
func (p *params) has(path ...string) bool {
	return p.lookup(path...) != nil
}

// topLevel returns the names of all top-level parameters.
func (p *params) topLevel() []string {
	names := make([]string, 0, len(p.root))
	for k := range p.root {
		names = append(names, k)
	}
	sort.Strings(names)
	return names
}

// str returns the string at path; a hash there is an invalid_request_error.
func (p *params) str(path ...string) (string, error) {
	switch v := p.lookup(path...).(type) {
	case nil:
		return "", nil
	case string:
		return v, nil
	default:
		return "", invalidParam(paramName(path), fmt.Sprintf("Invalid string: %s must be a string, not a hash.", paramName(path)))
	}
}

// optStr returns nil when the parameter is absent or empty.
func (p *params) optStr(path ...string) (*string, error) {
	s, err := p.str(path...)
	if err != nil || s == "" {
		return nil, err
	}
	return &s, nil
}

// int returns the integer at path and whether it was sent.
func (p *params) int(path ...string) (int64, bool, error) {
	s, err := p.str(path...)
	if err != nil || s == "" {
		return 0, false, err
	}
	n, err := strconv.ParseInt(s, 10, 64)
	if err != nil {
		return 0, false, invalidParam(paramName(path), fmt.Sprintf("Invalid integer: %s", s))
	}
	return n, true, nil
}

// bool returns the boolean at path; Stripe accepts only "true" and "false".
func (p *params) bool(path ...string) (bool, error) {
	s, err := p.str(path...)
	if err != nil || s == "" {
		return false, err
	}
	switch s {
	case "true":
		return true, nil
	case "false":
		return false, nil
	}
	return false, invalidParam(paramName(path), fmt.Sprintf("Invalid boolean: %s", s))
}

// list returns the string items of an indexed list parameter in index order.
// A single plain value is a list of one.
func (p *params) list(path ...string) ([]string, error) {
	switch v := p.lookup(path...).(type) {
	case nil:
		return nil, nil
	case string:
		if v == "" {
			return nil, nil
		}
		return []string{v}, nil
	case map[string]any:
		type item struct {
			index int
			value string
		}
		items := make([]item, 0, len(v))
		for k, child := range v {
			i, err := strconv.Atoi(k)
			if err != nil {
				return nil, invalidParam(paramName(path), fmt.Sprintf("Invalid array: %s must be a list, got key %q.", paramName(path), k))
			}
			s, ok := child.(string)
			if !ok {
				return nil, invalidParam(paramName(path), fmt.Sprintf("Invalid array: %s[%d] must be a string.", paramName(path), i))
			}
			items = append(items, item{i, s})
		}
		sort.Slice(items, func(a, b int) bool { return items[a].index < items[b].index })
		out := make([]string, len(items))
		for i, it := range items {
			out[i] = it.value
		}
		return out, nil
	}
	return nil, nil
}

// applyMetadata merges the metadata parameter into current with Stripe's
// rules: an empty value deletes its key and metadata="" deletes all keys.
func (p *params) applyMetadata(current map[string]string) (map[string]string, error) {
	out := map[string]string{}
	for k, v := range current {
		out[k] = v
	}
	switch v := p.lookup("metadata").(type) {
	case nil:
		return out, nil
	case string:
		if v != "" {
			return nil, invalidParam("metadata", "Invalid hash: metadata must be a hash, or an empty string to unset all keys.")
		}
		return map[string]string{}, nil
	case map[string]any:
		for k, child := range v {
			s, ok := child.(string)
			if !ok {
				return nil, invalidParam("metadata["+k+"]", "Invalid metadata value: nested hashes are not allowed.")
			}
			if len(k) > 40 {
				return nil, invalidParam("metadata["+k+"]", "Metadata keys can be at most 40 characters long.")
			}
			if len(s) > 500 {
				return nil, invalidParam("metadata["+k+"]", "Metadata values can be at most 500 characters long.")
			}
			if s == "" {
				delete(out, k)
				continue
			}
			out[k] = s
		}
	}
	if len(out) > 50 {
		return nil, invalidParam("metadata", "Metadata can have at most 50 keys.")
	}
	return out, nil
}

// checkKnown rejects top-level parameters outside allowed, as Stripe does
// with "Received unknown parameter". expand is always allowed.
func (p *params) checkKnown(allowed ...string) error {
	for _, name := range p.topLevel() {
		if name == "expand" {
			continue
		}
		known := false
		for _, a := range allowed {
			if a == name {
				known = true
				break
			}
		}
		if !known {
			return invalidParam(name, "Received unknown parameter: "+name)
		}
	}
	return nil
}

func paramName(path []string) string {
	if len(path) == 0 {
		return ""
	}
	var b strings.Builder
	b.WriteString(path[0])
	for _, s := range path[1:] {
		b.WriteString("[" + s + "]")
	}
	return b.String()
}
