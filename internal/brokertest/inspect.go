package brokertest

import (
	"testing"

	amqp "github.com/rabbitmq/amqp091-go"
)

// Inspect declares queue passively on the broker at url, over a
// connection of its own, and returns what the broker says of it: its
// ready messages and consumers. A queue that does not exist is the
// broker's error; failing to reach the broker fails the test.
func Inspect(t testing.TB, url, queue string) (amqp.Queue, error) {
	t.Helper()
	conn, err := amqp.Dial(url)
	if err != nil {
		t.Fatalf("brokertest: inspect %s: %v", queue, err)
	}
	defer conn.Close()
	ch, err := conn.Channel()
	if err != nil {
		t.Fatalf("brokertest: inspect %s: %v", queue, err)
	}
	defer ch.Close()
	return ch.QueueDeclarePassive(queue, true, false, false, false, nil)
}
