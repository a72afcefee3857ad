package cli

import (
	"errors"
	"os"
	"path/filepath"
	"testing"
)

// The URL (and its password) can come from a file, so it never appears
// in the process list.
func TestBrokerFlagsURLSources(t *testing.T) {
	dir := t.TempDir()
	file := filepath.Join(dir, "url")
	os.WriteFile(file, []byte("amqp://u:from-file@h:5672/\n"), 0o600)
	t.Setenv("AMQP_URL", "amqp://u:from-env@h:5672/")
	for _, tc := range []struct {
		flags BrokerFlags
		want  string
	}{
		{BrokerFlags{URL: "amqp://u:from-flag@h/"}, "amqp://u:from-flag@h/"},
		{BrokerFlags{URLFile: file}, "amqp://u:from-file@h:5672/"},
		{BrokerFlags{}, "amqp://u:from-env@h:5672/"},
	} {
		d, err := tc.flags.Dial("t")
		if err != nil || d.URL != tc.want {
			t.Errorf("%+v: URL %q, %v; want %q", tc.flags, d.URL, err, tc.want)
		}
	}
	t.Setenv("AMQP_URL", "")
	if d, _ := (&BrokerFlags{}).Dial("t"); d.URL != DefaultURL {
		t.Errorf("default URL %q", d.URL)
	}
	var ue *UsageError
	if _, err := (&BrokerFlags{URL: "x", URLFile: file}).Dial("t"); !errors.As(err, &ue) {
		t.Errorf("--url with --url-file: %v", err)
	}
	if _, err := (&BrokerFlags{URLFile: filepath.Join(dir, "missing")}).Dial("t"); err == nil {
		t.Error("missing --url-file accepted")
	}
}
