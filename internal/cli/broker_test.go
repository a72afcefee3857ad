package cli

import (
	"errors"
	"io"
	"os"
	"path/filepath"
	"strings"
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
		{BrokerFlags{URL: URLList{"amqp://u:from-flag@h/"}}, "amqp://u:from-flag@h/"},
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
	if _, err := (&BrokerFlags{URL: URLList{"amqp://x/"}, URLFile: file}).Dial("t"); !errors.As(err, &ue) {
		t.Errorf("--url with --url-file: %v", err)
	}
	if _, err := (&BrokerFlags{URLFile: filepath.Join(dir, "missing")}).Dial("t"); err == nil {
		t.Error("missing --url-file accepted")
	}
}

// Several nodes: repeated --url flags and comma-separated lists add up,
// in order; a bad URL anywhere is a usage error that hides the password.
func TestBrokerFlagsSeveralURLs(t *testing.T) {
	var b BrokerFlags
	fs := FlagSet("t", "t", io.Discard)
	b.Register(fs)
	if err := Parse(fs, []string{"--url", "amqp://u:pw1@a:5672/, amqp://u:pw2@b:5672/", "--url", "amqp://u:pw3@c:5672/"}); err != nil {
		t.Fatal(err)
	}
	d, err := b.Dial("t")
	want := "amqp://u:pw1@a:5672/,amqp://u:pw2@b:5672/,amqp://u:pw3@c:5672/"
	if err != nil || d.URL != want {
		t.Fatalf("URL %q, %v; want %q", d.URL, err, want)
	}
	if got := b.URL.String(); got != "amqp://u:xxxxx@a:5672/,amqp://u:xxxxx@b:5672/,amqp://u:xxxxx@c:5672/" {
		t.Errorf("flag value shown as %q", got)
	}
	file := filepath.Join(t.TempDir(), "urls")
	os.WriteFile(file, []byte("amqp://u:pw1@a/\namqp://u:pw2@b/,amqp://u:pw3@c/\n"), 0o600)
	if d, err := (&BrokerFlags{URLFile: file}).Dial("t"); err != nil || d.URL != "amqp://u:pw1@a/,amqp://u:pw2@b/,amqp://u:pw3@c/" {
		t.Errorf("--url-file with several URLs: %q, %v", d.URL, err)
	}
	var ue *UsageError
	_, err = (&BrokerFlags{URL: URLList{"amqp://u:pw1@a/", "http://u:secret9@b/"}}).Dial("t")
	if !errors.As(err, &ue) || !strings.Contains(err.Error(), "http://u:xxxxx@b/") || strings.Contains(err.Error(), "secret9") {
		t.Errorf("bad second URL: %v", err)
	}
}
