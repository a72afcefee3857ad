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

// TestReview3ClaimOwnerStringNotUniqueAcrossContainers: the claim's owner
// is HOST:/abs/--out. Two containers that share the hostname (docker
// --network host, or the same `hostname:` in a compose file, or two hosts
// both called "localhost") and both write /out/db.bin on different volumes
// are two destinations with one owner string. Consumer A restores on its
// volume and is SIGKILLed mid-transfer; the single-active-consumer standby
// B (other volume, same owner string) takes over, finds "its own" claim at
// the lowest offset, and acks the rest of the transfer into its own .part.
// The transfer is now split between two volumes: A, rerun on its own
// .part as the ClaimError tells a user to, can never finish it.
//
// Expected by the claim under review: B refuses (a ClaimError naming the
// owner, nothing acked) and A's rerun restores the file exactly.
func TestReview3ClaimOwnerStringNotUniqueAcrossContainers(t *testing.T) {
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

// TestReview3ClaimRerunAfterHostnameChangeRefusesItsOwnPart: a consumer
// in a container writes /out/db.bin on a persistent volume, acks part of
// the transfer and is SIGKILLed; the container is recreated (docker run
// --rm / compose --force-recreate / a pod rescheduled), which gives it a
// new hostname, and runs the same command on the same volume: the
// documented "run again to resume". The claim's owner was
// OLDHOST:/out/db.bin, so the rerun is "another owner": it refuses its own
// .part, naming a consumer that no longer exists, and no consumer can
// ever finish the run (only producer --restart, a full resend).
//
// Expected: the rerun on the same .part resumes and restores the file.
func TestReview3ClaimRerunAfterHostnameChangeRefusesItsOwnPart(t *testing.T) {
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

// TestReview3NoClaimStandbyIgnoresExistingOwner: --no-claim is for "a
// broker without streams, or a user who may not use it", yet it also
// stops the consumer from reading claims that are there. Consumer A
// (another --out) owns the run by its claim in QUEUE.claims, acks part of
// the transfer and is SIGKILLed; the single-active-consumer standby B was
// started with --no-claim on a broker whose claims stream works. B never
// looks at the stream, acks the rest into its own .part, and the transfer
// is split: A's rerun on its .part (what the ClaimError would have told a
// user to do) can no longer finish it.
//
// Expected: B honours A's existing claim (refuses naming A, acks nothing)
// whenever it can read the stream, so A's rerun restores the file.
func TestReview3NoClaimStandbyIgnoresExistingOwner(t *testing.T) {
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
	if !strings.Contains(bErr.String(), "is being restored by") || bPart == nil || a2err != nil || !bytes.Equal(got, data) {
		t.Errorf("--no-claim standby B after the owner A was killed: refused naming A: %v; B left a .part.state: %v; B's last lines: %s\n"+
			"A rerun on its .part: %v, restored exactly: %v; its last lines: %s\n"+
			"want: B honours A's claim and acks nothing; A's rerun restores the file",
			strings.Contains(bErr.String(), "is being restored by"), bPart == nil, lastLines(bErr.String(), 2), a2err, bytes.Equal(got, data), lastLines(a2Err.String(), 1))
	}
}

// TestReview3StandbyOnSharedStorageFromAnotherHostRefuses: the README's
// remedy for a standby is "give both the same --out on shared storage";
// "Same --out (one host, or shared storage): ... the standby resumes from
// its .part ... (it is the same claim owner)". On shared storage the
// standby runs on another host, so its owner is OTHERHOST:/abs/--out, not
// the active consumer's HOST:/abs/--out. A (hostname host-a) restores
// onto the shared --out and is SIGKILLed mid-transfer; the --standby B
// (hostname host-b, same --out, same files: here one filesystem plays the
// shared storage) takes the lock and the .part, then refuses its own
// .part as "being restored by host-a:...".
//
// Expected: B resumes from the .part and restores the file (exit 0).
func TestReview3StandbyOnSharedStorageFromAnotherHostRefuses(t *testing.T) {
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
