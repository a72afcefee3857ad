package main

// One restore per queue (issue 11 item 5, claims in QUEUE.claims),
// through the built binaries as a user runs them: consumers that look
// like the same owner (same host and path) or not (new hostname, another
// host on shared storage), killed mid-transfer, and what a standby or a
// rerun then does. Each test names what it proves.

import (
	"bytes"
	"crypto/rand"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/segmq/segmq/internal/brokertest"
)

// inMountNS returns a command that runs bin in a mount namespace of its
// own where the host directory vol is bind-mounted on mnt: what a
// container with a volume on mnt sees. unshare execs the shell, the shell
// execs bin, so the command's pid is bin's.
func inMountNS(vol, mnt, bin string, args ...string) *exec.Cmd {
	q := func(s string) string { return "'" + strings.ReplaceAll(s, "'", `'\''`) + "'" }
	line := "mount --bind " + q(vol) + " " + q(mnt) + " && exec " + q(bin)
	for _, a := range args {
		line += " " + q(a)
	}
	return exec.Command("unshare", "-m", "sh", "-c", line)
}

// claimFixture is where every claim test starts: a queue holding a
// 20 MiB raw transfer the real producer sent, the built consumer, and a
// temporary directory.
type claimFixture struct {
	url, queue, consumer, dir string
	data                      []byte
}

// newClaimFixture sets up a claimFixture. A non-empty namespaces is what
// the test plays with unshare(1) (e.g. "mount namespaces (unshare -m) to
// play two containers"): without root or unshare the test is skipped,
// saying so.
func newClaimFixture(t *testing.T, namespaces string) *claimFixture {
	t.Helper()
	if namespaces != "" {
		if os.Geteuid() != 0 {
			t.Skip("needs root for " + namespaces)
		}
		if _, err := exec.LookPath("unshare"); err != nil {
			t.Skip("needs unshare(1)")
		}
	}
	f := &claimFixture{url: brokertest.URL(t), queue: brokertest.Queue(t)}
	f.consumer = build(t, "consumer", ".")
	producer := buildProducer(t)
	f.dir = t.TempDir()
	f.data = make([]byte, 20<<20)
	rand.Read(f.data)
	in := filepath.Join(f.dir, "in.bin")
	if err := os.WriteFile(in, f.data, 0o644); err != nil {
		t.Fatal(err)
	}
	if out, err := producer(in, "--url", f.url, "--queue", f.queue, "--raw", "--mss", "4096", "--state", "-"); err != nil {
		t.Fatalf("producer: %v\n%s", err, out)
	}
	return f
}

// args are the consumer's arguments to restore the fixture's queue to
// out with an 8 s --timeout, then extra.
func (f *claimFixture) args(out string, extra ...string) []string {
	return append([]string{"--url", f.url, "--queue", f.queue, "--out", out, "--timeout", "8s"}, extra...)
}

// slowArgs are args for the owner that is killed mid-transfer: slow on
// purpose (prefetch 2, ack every segment), verbose so it says it claimed.
func (f *claimFixture) slowArgs(out string) []string {
	return f.args(out, "--prefetch", "2", "--ack-every", "1", "-v")
}

// waitForJournal waits up to 15 s for a non-empty journal at state: the
// owner has made a batch durable.
func waitForJournal(state string) {
	deadline := time.Now().Add(15 * time.Second)
	for time.Now().Before(deadline) {
		if st, err := os.Stat(state); err == nil && st.Size() > 0 {
			break
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// killOwner SIGKILLs the owner a and fails the test unless its stderr
// (read once it is dead) says it claimed the transfer.
func killOwner(t *testing.T, a *exec.Cmd, aErr *bytes.Buffer, who string) {
	t.Helper()
	a.Process.Kill() // SIGKILL
	a.Wait()
	if !strings.Contains(aErr.String(), "claimed the transfer") {
		t.Fatalf("%s never claimed the transfer:\n%s", who, aErr.String())
	}
}

// waitStandby waits up to limit for the standby b to exit, and kills it
// and fails the test if it does not.
func waitStandby(t *testing.T, b *exec.Cmd, limit time.Duration) error {
	t.Helper()
	done := make(chan error, 1)
	go func() { done <- b.Wait() }()
	select {
	case err := <-done:
		return err
	case <-time.After(limit):
		b.Process.Kill()
		t.Fatalf("standby B did not exit in %s", limit)
		return nil
	}
}

// TestClaimOwnerIsThePartNotTheHostAndPath: two containers that share a
// hostname (docker --network host, the same `hostname:` in a compose
// file, two hosts called "localhost") and both write /out/db.bin on
// different volumes are two owners: the claim names the .part's random id,
// not HOST:/abs/--out. Consumer A restores on its volume and is SIGKILLed
// mid-transfer; the single-active-consumer standby B (other volume, same
// host and path) refuses with a ClaimError naming the owner, acking
// nothing, and A's rerun restores the file exactly. (With the host and
// path as the owner, B acked the rest into its own .part and neither could
// finish.)
func TestClaimOwnerIsThePartNotTheHostAndPath(t *testing.T) {
	f := newClaimFixture(t, "mount namespaces (unshare -m) to play two containers")
	mnt := filepath.Join(f.dir, "out") // the path both containers use
	volA, volB := filepath.Join(f.dir, "volA"), filepath.Join(f.dir, "volB")
	for _, d := range []string{mnt, volA, volB} {
		if err := os.Mkdir(d, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	out := filepath.Join(mnt, "db.bin")
	var aErr bytes.Buffer
	a := inMountNS(volA, mnt, f.consumer, f.slowArgs(out)...)
	a.Stderr = &aErr
	if err := a.Start(); err != nil {
		t.Fatal(err)
	}
	time.Sleep(300 * time.Millisecond)
	var bOut, bErr bytes.Buffer
	b := inMountNS(volB, mnt, f.consumer, f.args(out, "-v")...)
	b.Stdout, b.Stderr = &bOut, &bErr
	if err := b.Start(); err != nil {
		t.Fatal(err)
	}
	waitForJournal(filepath.Join(volA, "db.bin.part.state"))
	time.Sleep(time.Second) // A acks a part of the transfer
	killOwner(t, a, &aErr, "A")
	waitStandby(t, b, 40*time.Second)
	bRefused := strings.Contains(bErr.String(), "is being restored by")
	bClaimed := strings.Contains(bErr.String(), "claimed the transfer")
	// A is rerun on its own volume, as the ClaimError tells a user to.
	var a2Out, a2Err bytes.Buffer
	a2 := inMountNS(volA, mnt, f.consumer, f.args(out)...)
	a2.Stdout, a2.Stderr = &a2Out, &a2Err
	a2err := a2.Run()
	got, _ := os.ReadFile(filepath.Join(volA, "db.bin"))
	partB, _ := os.Stat(filepath.Join(volB, "db.bin.part.state"))
	if !bRefused || bClaimed || a2err != nil || !bytes.Equal(got, f.data) {
		t.Errorf("two containers, same hostname and --out path, different volumes:\n"+
			"standby B refused naming the owner: %v; B claimed the run as \"its own\" owner: %v; B left a .part.state on its volume: %v\n"+
			"B's last lines: %s\n"+
			"A rerun on its own .part: %v, restored %d of %d bytes exactly: %v\nA rerun stderr: %s\n"+
			"want: B refuses and acks nothing, A's rerun restores the file",
			bRefused, bClaimed, partB != nil, lastLines(bErr.String(), 2), a2err, len(got), len(f.data), bytes.Equal(got, f.data), lastLines(a2Err.String(), 2))
	}
}

func lastLines(s string, n int) string {
	ls := strings.Split(strings.TrimRight(s, "\n"), "\n")
	if len(ls) > n {
		ls = ls[len(ls)-n:]
	}
	return fmt.Sprint(ls)
}

// inUTSNS returns a command that runs bin with the hostname host: what a
// container recreated by docker (its hostname is its new container id) or
// a rescheduled Kubernetes pod sees.
func inUTSNS(host, bin string, args ...string) *exec.Cmd {
	q := func(s string) string { return "'" + strings.ReplaceAll(s, "'", `'\''`) + "'" }
	line := "hostname " + q(host) + " && exec " + q(bin)
	for _, a := range args {
		line += " " + q(a)
	}
	return exec.Command("unshare", "-u", "sh", "-c", line)
}

// TestClaimRerunAfterHostnameChangeResumes: a consumer in a container
// writes /out/db.bin on a persistent volume, acks part of the transfer and
// is SIGKILLed; the container is recreated (compose --force-recreate, a
// pod rescheduled), which gives it a new hostname, and runs the same
// command on the same volume. The .part's id is in its journal, so the
// rerun is the same owner: it resumes and restores the file.
func TestClaimRerunAfterHostnameChangeResumes(t *testing.T) {
	f := newClaimFixture(t, "UTS namespaces (unshare -u) to play a recreated container")
	out := filepath.Join(f.dir, "db.bin")
	var aErr bytes.Buffer
	a := inUTSNS("c0ffee000001", f.consumer, f.slowArgs(out)...)
	a.Stderr = &aErr
	if err := a.Start(); err != nil {
		t.Fatal(err)
	}
	waitForJournal(out + ".part.state")
	time.Sleep(time.Second)
	killOwner(t, a, &aErr, "the first container")
	var rOut, rErr bytes.Buffer
	r := inUTSNS("c0ffee000002", f.consumer, f.args(out)...)
	r.Stdout, r.Stderr = &rOut, &rErr
	rerr := r.Run()
	got, _ := os.ReadFile(out)
	if rerr != nil || !bytes.Equal(got, f.data) {
		t.Errorf("the recreated container (new hostname, same volume and --out) reran on its own .part: %v, restored exactly: %v\nstderr: %s\nwant: it resumes and restores the file",
			rerr, bytes.Equal(got, f.data), lastLines(rErr.String(), 2))
	}
}

// TestStandbyOnSharedStorageFromAnotherHostTakesOver: A (hostname host-a)
// restores onto an --out on shared storage and is SIGKILLed mid-transfer;
// the --standby B (hostname host-b, same --out: one filesystem plays the
// shared storage) takes the lock and the .part, which carries A's .part
// id, so B is the same claim owner: it resumes and restores the file.
func TestStandbyOnSharedStorageFromAnotherHostTakesOver(t *testing.T) {
	f := newClaimFixture(t, "UTS namespaces (unshare -u) to play two hosts")
	out := filepath.Join(f.dir, "shared", "db.bin")
	if err := os.Mkdir(filepath.Dir(out), 0o755); err != nil {
		t.Fatal(err)
	}
	var aErr bytes.Buffer
	a := inUTSNS("host-a", f.consumer, f.slowArgs(out)...)
	a.Stderr = &aErr
	if err := a.Start(); err != nil {
		t.Fatal(err)
	}
	waitForJournal(out + ".part.state")
	var bOut, bErr bytes.Buffer
	b := inUTSNS("host-b", f.consumer, f.args(out, "--standby")...)
	b.Stdout, b.Stderr = &bOut, &bErr
	if err := b.Start(); err != nil {
		t.Fatal(err)
	}
	time.Sleep(time.Second)
	killOwner(t, a, &aErr, "A")
	berr := waitStandby(t, b, 60*time.Second)
	got, _ := os.ReadFile(out)
	if berr != nil || !bytes.Equal(got, f.data) {
		t.Errorf("--standby on the same shared --out from another host, after the active consumer was killed: %v, restored exactly: %v\nstderr: %s\nwant: it resumes from the .part and restores the file",
			berr, bytes.Equal(got, f.data), lastLines(bErr.String(), 1))
	}
}

// TestNoClaimHonoursAnExistingClaim: --no-claim makes no claim of its
// own, but it still reads the claims that are there. Consumer A owns the
// run by its claim in QUEUE.claims, acks part of the transfer and is
// SIGKILLed; the single-active-consumer standby B (another --out) runs
// with --no-claim on a broker whose claims stream works. B must refuse,
// naming A, and ack nothing, so that A's rerun on its .part restores the
// file. (Found by the hostile review of the claims stream: before, B
// never looked at the stream, acked the rest into its own .part, and the
// transfer was split.)
func TestNoClaimHonoursAnExistingClaim(t *testing.T) {
	f := newClaimFixture(t, "")
	outA, outB := filepath.Join(f.dir, "a.bin"), filepath.Join(f.dir, "b.bin")
	var aErr bytes.Buffer
	a := exec.Command(f.consumer, f.slowArgs(outA)...)
	a.Stderr = &aErr
	if err := a.Start(); err != nil {
		t.Fatal(err)
	}
	time.Sleep(300 * time.Millisecond)
	var bErr bytes.Buffer
	b := exec.Command(f.consumer, f.args(outB, "--no-claim")...)
	b.Stderr = &bErr
	if err := b.Start(); err != nil {
		t.Fatal(err)
	}
	waitForJournal(outA + ".part.state")
	time.Sleep(time.Second)
	killOwner(t, a, &aErr, "A")
	waitStandby(t, b, 40*time.Second)
	_, bPart := os.Stat(outB + ".part.state")
	var a2Err bytes.Buffer
	a2 := exec.Command(f.consumer, f.args(outA)...)
	a2.Stderr = &a2Err
	a2err := a2.Run()
	got, _ := os.ReadFile(outA)
	// B's .part keeps the batch it made durable before it read the
	// claims (a loser's .part, as with a claiming standby); what matters
	// is that it acked nothing, so A's rerun has every segment.
	if !strings.Contains(bErr.String(), "is being restored by") || a2err != nil || !bytes.Equal(got, f.data) {
		t.Errorf("--no-claim standby B after the owner A was killed: refused naming A: %v; B left a .part.state: %v; B's last lines: %s\n"+
			"A rerun on its .part: %v, restored exactly: %v; its last lines: %s\n"+
			"want: B honours A's claim and acks nothing; A's rerun restores the file",
			strings.Contains(bErr.String(), "is being restored by"), bPart == nil, lastLines(bErr.String(), 2), a2err, bytes.Equal(got, f.data), lastLines(a2Err.String(), 1))
	}
}
