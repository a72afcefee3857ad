package main

// Hostile review of issue 11 item 5 (one restore per queue, claims in
// QUEUE.claims), through the built binaries as a user runs them. These
// tests FAIL on the code under review: each names what it proves.

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
	if os.Geteuid() != 0 {
		t.Skip("needs root for mount namespaces (unshare -m) to play two containers")
	}
	if _, err := exec.LookPath("unshare"); err != nil {
		t.Skip("needs unshare(1)")
	}
	url := brokertest.URL(t)
	queue := brokertest.Queue(t)
	consumer := build(t, "consumer", ".")
	producer := buildProducer(t)
	dir := t.TempDir()
	mnt := filepath.Join(dir, "out") // the path both containers use
	volA, volB := filepath.Join(dir, "volA"), filepath.Join(dir, "volB")
	for _, d := range []string{mnt, volA, volB} {
		if err := os.Mkdir(d, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	data := make([]byte, 20<<20)
	rand.Read(data)
	in := filepath.Join(dir, "in.bin")
	if err := os.WriteFile(in, data, 0o644); err != nil {
		t.Fatal(err)
	}
	if out, err := producer(in, "--url", url, "--queue", queue, "--raw", "--mss", "4096", "--state", "-"); err != nil {
		t.Fatalf("producer: %v\n%s", err, out)
	}
	out := filepath.Join(mnt, "db.bin")
	// A: slow on purpose (prefetch 2, ack every segment) so that it is
	// killed mid-transfer.
	var aErr bytes.Buffer
	a := inMountNS(volA, mnt, consumer, "--url", url, "--queue", queue, "--out", out, "--timeout", "8s", "--prefetch", "2", "--ack-every", "1", "-v")
	a.Stderr = &aErr
	if err := a.Start(); err != nil {
		t.Fatal(err)
	}
	time.Sleep(300 * time.Millisecond)
	var bOut, bErr bytes.Buffer
	b := inMountNS(volB, mnt, consumer, "--url", url, "--queue", queue, "--out", out, "--timeout", "8s", "-v")
	b.Stdout, b.Stderr = &bOut, &bErr
	if err := b.Start(); err != nil {
		t.Fatal(err)
	}
	// A's stderr is written by A only; read it after A is dead.
	deadline := time.Now().Add(15 * time.Second)
	for time.Now().Before(deadline) {
		if st, err := os.Stat(filepath.Join(volA, "db.bin.part.state")); err == nil && st.Size() > 0 {
			break
		}
		time.Sleep(50 * time.Millisecond)
	}
	time.Sleep(time.Second) // A acks a part of the transfer
	a.Process.Kill()        // SIGKILL
	a.Wait()
	if !strings.Contains(aErr.String(), "claimed the transfer") {
		t.Fatalf("A never claimed the transfer:\n%s", aErr.String())
	}
	bDone := make(chan error, 1)
	go func() { bDone <- b.Wait() }()
	select {
	case <-bDone:
	case <-time.After(40 * time.Second):
		b.Process.Kill()
		t.Fatal("standby B did not exit in 40s")
	}
	bRefused := strings.Contains(bErr.String(), "is being restored by")
	bClaimed := strings.Contains(bErr.String(), "claimed the transfer")
	// A is rerun on its own volume, as the ClaimError tells a user to.
	var a2Out, a2Err bytes.Buffer
	a2 := inMountNS(volA, mnt, consumer, "--url", url, "--queue", queue, "--out", out, "--timeout", "8s")
	a2.Stdout, a2.Stderr = &a2Out, &a2Err
	a2err := a2.Run()
	got, _ := os.ReadFile(filepath.Join(volA, "db.bin"))
	partB, _ := os.Stat(filepath.Join(volB, "db.bin.part.state"))
	if !bRefused || bClaimed || a2err != nil || !bytes.Equal(got, data) {
		t.Errorf("two containers, same hostname and --out path, different volumes:\n"+
			"standby B refused naming the owner: %v; B claimed the run as \"its own\" owner: %v; B left a .part.state on its volume: %v\n"+
			"B's last lines: %s\n"+
			"A rerun on its own .part: %v, restored %d of %d bytes exactly: %v\nA rerun stderr: %s\n"+
			"want: B refuses and acks nothing, A's rerun restores the file",
			bRefused, bClaimed, partB != nil, lastLines(bErr.String(), 2), a2err, len(got), len(data), bytes.Equal(got, data), lastLines(a2Err.String(), 2))
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
	if os.Geteuid() != 0 {
		t.Skip("needs root for UTS namespaces (unshare -u) to play a recreated container")
	}
	if _, err := exec.LookPath("unshare"); err != nil {
		t.Skip("needs unshare(1)")
	}
	url := brokertest.URL(t)
	queue := brokertest.Queue(t)
	consumer := build(t, "consumer", ".")
	producer := buildProducer(t)
	dir := t.TempDir()
	data := make([]byte, 20<<20)
	rand.Read(data)
	in := filepath.Join(dir, "in.bin")
	if err := os.WriteFile(in, data, 0o644); err != nil {
		t.Fatal(err)
	}
	if out, err := producer(in, "--url", url, "--queue", queue, "--raw", "--mss", "4096", "--state", "-"); err != nil {
		t.Fatalf("producer: %v\n%s", err, out)
	}
	out := filepath.Join(dir, "db.bin")
	var aErr bytes.Buffer
	a := inUTSNS("c0ffee000001", consumer, "--url", url, "--queue", queue, "--out", out, "--timeout", "8s", "--prefetch", "2", "--ack-every", "1", "-v")
	a.Stderr = &aErr
	if err := a.Start(); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(15 * time.Second)
	for time.Now().Before(deadline) {
		if st, err := os.Stat(out + ".part.state"); err == nil && st.Size() > 0 {
			break
		}
		time.Sleep(50 * time.Millisecond)
	}
	time.Sleep(time.Second)
	a.Process.Kill()
	a.Wait()
	if !strings.Contains(aErr.String(), "claimed the transfer") {
		t.Fatalf("the first container never claimed the transfer:\n%s", aErr.String())
	}
	var rOut, rErr bytes.Buffer
	r := inUTSNS("c0ffee000002", consumer, "--url", url, "--queue", queue, "--out", out, "--timeout", "8s")
	r.Stdout, r.Stderr = &rOut, &rErr
	rerr := r.Run()
	got, _ := os.ReadFile(out)
	if rerr != nil || !bytes.Equal(got, data) {
		t.Errorf("the recreated container (new hostname, same volume and --out) reran on its own .part: %v, restored exactly: %v\nstderr: %s\nwant: it resumes and restores the file",
			rerr, bytes.Equal(got, data), lastLines(rErr.String(), 2))
	}
}

// TestStandbyOnSharedStorageFromAnotherHostTakesOver: A (hostname host-a)
// restores onto an --out on shared storage and is SIGKILLed mid-transfer;
// the --standby B (hostname host-b, same --out: one filesystem plays the
// shared storage) takes the lock and the .part, which carries A's .part
// id, so B is the same claim owner: it resumes and restores the file.
func TestStandbyOnSharedStorageFromAnotherHostTakesOver(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root for UTS namespaces (unshare -u) to play two hosts")
	}
	if _, err := exec.LookPath("unshare"); err != nil {
		t.Skip("needs unshare(1)")
	}
	url := brokertest.URL(t)
	queue := brokertest.Queue(t)
	consumer := build(t, "consumer", ".")
	producer := buildProducer(t)
	dir := t.TempDir()
	data := make([]byte, 20<<20)
	rand.Read(data)
	in := filepath.Join(dir, "in.bin")
	if err := os.WriteFile(in, data, 0o644); err != nil {
		t.Fatal(err)
	}
	if out, err := producer(in, "--url", url, "--queue", queue, "--raw", "--mss", "4096", "--state", "-"); err != nil {
		t.Fatalf("producer: %v\n%s", err, out)
	}
	out := filepath.Join(dir, "shared", "db.bin")
	if err := os.Mkdir(filepath.Dir(out), 0o755); err != nil {
		t.Fatal(err)
	}
	var aErr bytes.Buffer
	a := inUTSNS("host-a", consumer, "--url", url, "--queue", queue, "--out", out, "--timeout", "8s", "--prefetch", "2", "--ack-every", "1", "-v")
	a.Stderr = &aErr
	if err := a.Start(); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(15 * time.Second)
	for time.Now().Before(deadline) {
		if st, err := os.Stat(out + ".part.state"); err == nil && st.Size() > 0 {
			break
		}
		time.Sleep(50 * time.Millisecond)
	}
	var bOut, bErr bytes.Buffer
	b := inUTSNS("host-b", consumer, "--url", url, "--queue", queue, "--out", out, "--timeout", "8s", "--standby")
	b.Stdout, b.Stderr = &bOut, &bErr
	if err := b.Start(); err != nil {
		t.Fatal(err)
	}
	time.Sleep(time.Second)
	a.Process.Kill()
	a.Wait()
	if !strings.Contains(aErr.String(), "claimed the transfer") {
		t.Fatalf("A never claimed the transfer:\n%s", aErr.String())
	}
	bDone := make(chan error, 1)
	go func() { bDone <- b.Wait() }()
	var berr error
	select {
	case berr = <-bDone:
	case <-time.After(60 * time.Second):
		b.Process.Kill()
		t.Fatal("standby B did not exit in 60s")
	}
	got, _ := os.ReadFile(out)
	if berr != nil || !bytes.Equal(got, data) {
		t.Errorf("--standby on the same shared --out from another host, after the active consumer was killed: %v, restored exactly: %v\nstderr: %s\nwant: it resumes from the .part and restores the file",
			berr, bytes.Equal(got, data), lastLines(bErr.String(), 1))
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
	url := brokertest.URL(t)
	queue := brokertest.Queue(t)
	consumer := build(t, "consumer", ".")
	producer := buildProducer(t)
	dir := t.TempDir()
	data := make([]byte, 20<<20)
	rand.Read(data)
	in := filepath.Join(dir, "in.bin")
	if err := os.WriteFile(in, data, 0o644); err != nil {
		t.Fatal(err)
	}
	if out, err := producer(in, "--url", url, "--queue", queue, "--raw", "--mss", "4096", "--state", "-"); err != nil {
		t.Fatalf("producer: %v\n%s", err, out)
	}
	outA, outB := filepath.Join(dir, "a.bin"), filepath.Join(dir, "b.bin")
	var aErr bytes.Buffer
	a := exec.Command(consumer, "--url", url, "--queue", queue, "--out", outA, "--timeout", "8s", "--prefetch", "2", "--ack-every", "1", "-v")
	a.Stderr = &aErr
	if err := a.Start(); err != nil {
		t.Fatal(err)
	}
	time.Sleep(300 * time.Millisecond)
	var bErr bytes.Buffer
	b := exec.Command(consumer, "--url", url, "--queue", queue, "--out", outB, "--timeout", "8s", "--no-claim")
	b.Stderr = &bErr
	if err := b.Start(); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(15 * time.Second)
	for time.Now().Before(deadline) {
		if st, err := os.Stat(outA + ".part.state"); err == nil && st.Size() > 0 {
			break
		}
		time.Sleep(50 * time.Millisecond)
	}
	time.Sleep(time.Second)
	a.Process.Kill()
	a.Wait()
	if !strings.Contains(aErr.String(), "claimed the transfer") {
		t.Fatalf("A never claimed the transfer:\n%s", aErr.String())
	}
	bDone := make(chan error, 1)
	go func() { bDone <- b.Wait() }()
	select {
	case <-bDone:
	case <-time.After(40 * time.Second):
		b.Process.Kill()
		t.Fatal("standby B did not exit in 40s")
	}
	_, bPart := os.Stat(outB + ".part.state")
	var a2Err bytes.Buffer
	a2 := exec.Command(consumer, "--url", url, "--queue", queue, "--out", outA, "--timeout", "8s")
	a2.Stderr = &a2Err
	a2err := a2.Run()
	got, _ := os.ReadFile(outA)
	// B's .part keeps the batch it made durable before it read the
	// claims (a loser's .part, as with a claiming standby); what matters
	// is that it acked nothing, so A's rerun has every segment.
	if !strings.Contains(bErr.String(), "is being restored by") || a2err != nil || !bytes.Equal(got, data) {
		t.Errorf("--no-claim standby B after the owner A was killed: refused naming A: %v; B left a .part.state: %v; B's last lines: %s\n"+
			"A rerun on its .part: %v, restored exactly: %v; its last lines: %s\n"+
			"want: B honours A's claim and acks nothing; A's rerun restores the file",
			strings.Contains(bErr.String(), "is being restored by"), bPart == nil, lastLines(bErr.String(), 2), a2err, bytes.Equal(got, data), lastLines(a2Err.String(), 1))
	}
}

