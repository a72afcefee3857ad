// Package brokertest gives tests a real RabbitMQ. In order of preference:
//
//  1. $AMQP_URL, when set;
//  2. a RabbitMQ container through testcontainers-go, when a Docker engine
//     answers and can pull the image (SEGMQ_TEST_DOCKER=0 turns this off);
//  3. a throwaway local rabbitmq-server (package localbroker).
//
// There is no mock and no skip: when none of them works, the tests fail
// and say what to install.
package brokertest

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"os"
	"sync"
	"testing"
	"time"

	amqp "github.com/rabbitmq/amqp091-go"
	"github.com/testcontainers/testcontainers-go"
	"github.com/testcontainers/testcontainers-go/wait"
	"go.uber.org/goleak"

	"github.com/segmq/segmq/internal/localbroker"
)

// Image is the container image used where Docker can pull it.
const Image = "rabbitmq:4.1-management"

var (
	url    string
	local  *localbroker.Broker
	source string
)

// Main starts a broker for a test package, runs its tests and stops it:
//
//	func TestMain(m *testing.M) { os.Exit(brokertest.Main(m)) }
func Main(m *testing.M) int {
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	stop, err := start(ctx)
	cancel()
	if err != nil {
		fmt.Fprintf(os.Stderr, "brokertest: no broker: %v\n", err)
		return 1
	}
	code := m.Run()
	stop()
	if code == 0 && local != nil {
		// Every connection, channel and goroutine the tests started must
		// be gone (testcontainers keeps a reaper, so only for local).
		if err := goleak.Find(); err != nil {
			fmt.Fprintf(os.Stderr, "brokertest: goroutines leaked: %v\n", err)
			return 1
		}
	}
	return code
}

func start(ctx context.Context) (func(), error) {
	if u := os.Getenv("AMQP_URL"); u != "" {
		url, source = u, "$AMQP_URL"
		return func() {}, nil
	}
	if dockerUsable() {
		c, err := testcontainers.GenericContainer(ctx, testcontainers.GenericContainerRequest{
			ContainerRequest: testcontainers.ContainerRequest{
				Image:        Image,
				ExposedPorts: []string{"5672/tcp"},
				Env:          map[string]string{"RABBITMQ_DEFAULT_USER": "segmq", "RABBITMQ_DEFAULT_PASS": "segmq"},
				WaitingFor:   wait.ForListeningPort("5672/tcp").WithStartupTimeout(2 * time.Minute),
			},
			Started: true,
		})
		if err == nil {
			var ep string
			if ep, err = c.PortEndpoint(ctx, "5672/tcp", ""); err == nil {
				url, source = "amqp://segmq:segmq@"+ep+"/", "testcontainers "+Image
				return func() { testcontainers.TerminateContainer(c) }, nil
			}
			testcontainers.TerminateContainer(c)
		}
		fmt.Fprintf(os.Stderr, "brokertest: Docker answered but the container did not start (%v); using a local rabbitmq-server\n", err)
	}
	b, err := localbroker.Start(ctx, localbroker.Options{Config: os.Getenv("SEGMQ_TEST_BROKER_CONFIG"), Root: localbroker.RootFromEnv()})
	if err != nil {
		return nil, err
	}
	url, local, source = b.URL, b, "local rabbitmq-server "+b.Node
	return func() { b.Close() }, nil
}

func dockerUsable() bool {
	if os.Getenv("SEGMQ_TEST_DOCKER") == "0" {
		return false
	}
	if os.Getenv("DOCKER_HOST") == "" {
		if _, err := os.Stat("/var/run/docker.sock"); err != nil {
			return false
		}
	}
	p, err := testcontainers.NewDockerProvider()
	if err != nil {
		return false
	}
	defer p.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	return p.Health(ctx) == nil
}

// URL is the broker's AMQP URL.
func URL(t testing.TB) string {
	t.Helper()
	if url == "" {
		t.Fatal("brokertest: no broker; call brokertest.Main from TestMain")
	}
	return url
}

// Source says where the broker came from, for logs.
func Source() string { return source }

// Local is the local node, for fault tests that stop and restart it. It
// fails the test when the broker is not a local node.
func Local(t testing.TB) *localbroker.Broker {
	t.Helper()
	if local == nil {
		t.Fatalf("brokertest: this test restarts the broker and needs a local rabbitmq-server, not %s", source)
	}
	return local
}

// Queue returns a fresh queue name and deletes the queue and its
// dead-letter queue after the test.
func Queue(t testing.TB) string {
	t.Helper()
	var b [6]byte
	rand.Read(b[:])
	q := "test-" + hex.EncodeToString(b[:])
	u := URL(t)
	t.Cleanup(func() {
		conn, err := amqp.Dial(u)
		if err != nil {
			return
		}
		defer conn.Close()
		ch, err := conn.Channel()
		if err != nil {
			return
		}
		ch.QueueDelete(q, false, false, false)
		ch.QueueDelete(q+".dead", false, false, false)
		ch.QueueDelete(q+".claims", false, false, false)
		ch.ExchangeDelete(q+".dlx", false, false)
	})
	return q
}

// LogBuffer is a goroutine-safe buffer for capturing a logger's output in
// a test.
type LogBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *LogBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *LogBuffer) String() string { l.mu.Lock(); defer l.mu.Unlock(); return l.b.String() }
