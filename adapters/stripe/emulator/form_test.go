package emulator

import (
	"net/url"
	"reflect"
	"testing"
)

func TestParseParamsBrackets(t *testing.T) {
	values, err := url.ParseQuery("expand[]=a&expand[]=b&metadata[k]=v&payment_method_types[1]=y&payment_method_types[0]=x&invoice_settings[default_payment_method]=pm_1&amount=5")
	if err != nil {
		t.Fatal(err)
	}
	p, err := parseParams(values)
	if err != nil {
		t.Fatal(err)
	}
	if got, _ := p.list("expand"); !reflect.DeepEqual(got, []string{"a", "b"}) {
		t.Errorf("expand = %v, want [a b]", got)
	}
	if got, _ := p.list("payment_method_types"); !reflect.DeepEqual(got, []string{"x", "y"}) {
		t.Errorf("payment_method_types = %v, want [x y] in index order", got)
	}
	if got, _ := p.str("invoice_settings", "default_payment_method"); got != "pm_1" {
		t.Errorf("invoice_settings[default_payment_method] = %q", got)
	}
	if got, sent, _ := p.int("amount"); got != 5 || !sent {
		t.Errorf("amount = %d (sent %v), want 5", got, sent)
	}
	metadata, err := p.applyMetadata(map[string]string{"old": "1"})
	if err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(metadata, map[string]string{"old": "1", "k": "v"}) {
		t.Errorf("metadata = %v", metadata)
	}
}

func TestParseParamsRejectsConflicts(t *testing.T) {
	for _, query := range []string{"metadata=x&metadata[k]=v", "a[]b=1", "[x]=1", "a[b=1"} {
		values, err := url.ParseQuery(query)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := parseParams(values); err == nil {
			t.Errorf("parseParams(%q) accepted a malformed key", query)
		}
	}
}

func TestProcessingFeeRoundsHalfUp(t *testing.T) {
	e := &Emulator{cfg: Config{FeePercentBps: 290, FeeFixed: 30}}
	// 2.9 % of 500 is exactly 14.5 and of 1500 exactly 43.5, which round up.
	// 2.9 % of 50 is 1.45 and of 1724 is 49.996.
	for amount, want := range map[int64]int64{10000: 320, 50: 31, 500: 45, 1500: 74, 1724: 80} {
		if got := e.processingFee(amount); got != want {
			t.Errorf("processingFee(%d) = %d, want %d", amount, got, want)
		}
	}
}
