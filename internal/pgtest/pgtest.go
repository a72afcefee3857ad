// Package pgtest gives tests a real PostgreSQL server: $DATABASE_URL when
// it is set, otherwise a throwaway cluster (initdb + pg_ctl, as the
// postgres user when running as root) in a temp directory on a free
// loopback port, stopped and removed when the test binary ends.
//
// Tests never skip for want of a server: with no PostgreSQL installed they
// fail and say what to install (scripts/setup.sh does it).
//
//	func TestMain(m *testing.M) { os.Exit(pgtest.Main(m)) }
//	func TestX(t *testing.T) { url := pgtest.NewDB(t) ... }
package pgtest

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"net"
	"net/url"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"sort"
	"strconv"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
)

var (
	mu      sync.Mutex
	server  *Server
	started bool
	baseURL string
	initErr error
)

// Server is a throwaway cluster.
type Server struct {
	Dir  string // owns data/, log and the socket
	Port int
	bin  string
	uid  *syscall.Credential
}

// URL is the server's connection URL for database db.
func (s *Server) URL(db string) string {
	return fmt.Sprintf("postgres://postgres@127.0.0.1:%d/%s?sslmode=disable", s.Port, db)
}

// Main runs the tests and stops the cluster, if one was started.
func Main(m *testing.M) int {
	code := m.Run()
	mu.Lock()
	defer mu.Unlock()
	if server != nil {
		if err := server.Stop(); err != nil {
			fmt.Fprintf(os.Stderr, "pgtest: %v\n", err)
		}
		server = nil
	}
	return code
}

// BaseURL returns the URL of a server's maintenance database ("postgres"
// or $DATABASE_URL), starting a cluster on first use.
func BaseURL(t testing.TB) string {
	t.Helper()
	mu.Lock()
	defer mu.Unlock()
	if !started {
		started = true
		if u := os.Getenv("DATABASE_URL"); u != "" {
			baseURL = u
		} else {
			server, initErr = Start(context.Background(), nil)
			if initErr == nil {
				baseURL = server.URL("postgres")
			}
		}
	}
	if initErr != nil {
		t.Fatalf("pgtest: no PostgreSQL server: %v (run scripts/setup.sh, or set DATABASE_URL)", initErr)
	}
	return baseURL
}

// NewDB creates a fresh database for the test and drops it when the test
// ends. It returns its URL.
func NewDB(t testing.TB) string {
	t.Helper()
	base := BaseURL(t)
	var b [6]byte
	rand.Read(b[:])
	name := "t_" + hex.EncodeToString(b[:])
	ctx := context.Background()
	conn, err := pgx.Connect(ctx, base)
	if err != nil {
		t.Fatalf("pgtest: connect %s: %v", base, err)
	}
	defer conn.Close(ctx)
	if _, err := conn.Exec(ctx, "CREATE DATABASE "+name+" TEMPLATE template0 ENCODING 'UTF8'"); err != nil {
		t.Fatalf("pgtest: create database: %v", err)
	}
	u, err := url.Parse(base)
	if err != nil {
		t.Fatalf("pgtest: %v", err)
	}
	u.Path = "/" + name
	t.Cleanup(func() {
		conn, err := pgx.Connect(ctx, base)
		if err != nil {
			t.Errorf("pgtest: drop database: %v", err)
			return
		}
		defer conn.Close(ctx)
		if _, err := conn.Exec(ctx, "DROP DATABASE IF EXISTS "+name+" WITH (FORCE)"); err != nil {
			t.Errorf("pgtest: drop database: %v", err)
		}
	})
	return u.String()
}

// findBin returns the directory holding initdb and pg_ctl: the newest
// /usr/lib/postgresql/*/bin, else wherever PATH has initdb.
func findBin() (string, error) {
	dirs, _ := filepath.Glob("/usr/lib/postgresql/*/bin")
	sort.Slice(dirs, func(i, j int) bool { return ver(dirs[i]) > ver(dirs[j]) })
	for _, d := range dirs {
		if _, err := os.Stat(filepath.Join(d, "initdb")); err == nil {
			return d, nil
		}
	}
	if p, err := exec.LookPath("initdb"); err == nil {
		return filepath.Dir(p), nil
	}
	return "", fmt.Errorf("initdb not found in /usr/lib/postgresql/*/bin or PATH; install postgresql (apt-get install -y postgresql)")
}

func ver(dir string) int {
	n, _ := strconv.Atoi(filepath.Base(filepath.Dir(dir)))
	return n
}

// Start initialises and starts a cluster in a new temp directory.
// settings are extra -c options (name=value), which override the
// defaults; the defaults favour speed over durability (fsync off).
func Start(ctx context.Context, settings []string) (*Server, error) {
	return StartDir(ctx, "", settings)
}

// StartDir is Start in dir, which must not exist or be empty ("" means a
// new temp directory). Stop removes it.
func StartDir(ctx context.Context, dir string, settings []string) (*Server, error) {
	bin, err := findBin()
	if err != nil {
		return nil, err
	}
	if dir == "" {
		dir, err = os.MkdirTemp("", "pgtest-")
	} else {
		err = os.MkdirAll(dir, 0o700)
	}
	if err != nil {
		return nil, err
	}
	s := &Server{Dir: dir, bin: bin}
	if os.Geteuid() == 0 {
		u, err := user.Lookup("postgres")
		if err != nil {
			os.RemoveAll(dir)
			return nil, fmt.Errorf("running as root needs a postgres user to run the server: %w", err)
		}
		uid, _ := strconv.Atoi(u.Uid)
		gid, _ := strconv.Atoi(u.Gid)
		if err := os.Chown(dir, uid, gid); err != nil {
			os.RemoveAll(dir)
			return nil, err
		}
		s.uid = &syscall.Credential{Uid: uint32(uid), Gid: uint32(gid)}
	}
	if s.Port, err = freePort(); err != nil {
		os.RemoveAll(dir)
		return nil, err
	}
	if out, err := s.cmd(ctx, "initdb", "-D", filepath.Join(dir, "data"), "--auth=trust", "-U", "postgres",
		"-E", "UTF8", "--locale=C.UTF-8", "--no-sync").CombinedOutput(); err != nil {
		os.RemoveAll(dir)
		return nil, fmt.Errorf("initdb: %v: %s", err, out)
	}
	opts := fmt.Sprintf("-p %d -k %s -c listen_addresses=127.0.0.1 -c fsync=off -c synchronous_commit=off -c full_page_writes=off", s.Port, dir)
	for _, kv := range settings {
		opts += " -c " + kv
	}
	if out, err := s.cmd(ctx, "pg_ctl", "-D", filepath.Join(dir, "data"), "-l", filepath.Join(dir, "log"),
		"-w", "-t", "60", "-o", opts, "start").CombinedOutput(); err != nil {
		log, _ := os.ReadFile(filepath.Join(dir, "log"))
		os.RemoveAll(dir)
		return nil, fmt.Errorf("pg_ctl start: %v: %s\n%s", err, out, log)
	}
	if err := os.WriteFile(filepath.Join(dir, "port"), []byte(strconv.Itoa(s.Port)), 0o644); err != nil {
		s.Stop()
		return nil, err
	}
	return s, nil
}

// Attach returns the server started in dir by another process.
func Attach(dir string) (*Server, error) {
	bin, err := findBin()
	if err != nil {
		return nil, err
	}
	b, err := os.ReadFile(filepath.Join(dir, "port"))
	if err != nil {
		return nil, err
	}
	s := &Server{Dir: dir, bin: bin}
	if s.Port, err = strconv.Atoi(string(b)); err != nil {
		return nil, err
	}
	if os.Geteuid() == 0 {
		if fi, err := os.Stat(dir); err == nil {
			if st, ok := fi.Sys().(*syscall.Stat_t); ok && st.Uid != 0 {
				s.uid = &syscall.Credential{Uid: st.Uid, Gid: st.Gid}
			}
		}
	}
	return s, nil
}

func (s *Server) cmd(ctx context.Context, name string, args ...string) *exec.Cmd {
	c := exec.CommandContext(ctx, filepath.Join(s.bin, name), args...)
	c.Dir = s.Dir
	if s.uid != nil {
		c.SysProcAttr = &syscall.SysProcAttr{Credential: s.uid}
	}
	return c
}

// Stop stops the server and removes its directory.
func (s *Server) Stop() error {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	out, err := s.cmd(ctx, "pg_ctl", "-D", filepath.Join(s.Dir, "data"), "-m", "immediate", "-w", "stop").CombinedOutput()
	if rerr := os.RemoveAll(s.Dir); err == nil && rerr != nil {
		return rerr
	}
	if err != nil {
		return fmt.Errorf("pg_ctl stop: %v: %s", err, out)
	}
	return nil
}

func freePort() (int, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, err
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port, nil
}
