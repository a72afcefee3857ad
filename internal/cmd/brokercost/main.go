// Command brokercost measures the broker's CPU per message under variants
// of what segmq does differently from the raw baseline (headers, queue
// arguments, mandatory): one publisher and one consumer, both at once.
package main

import (
	"context"
	"flag"
	"fmt"
	"os"
	"strconv"
	"strings"
	"time"

	amqp "github.com/rabbitmq/amqp091-go"
)

func brokerCPU(pid int) float64 {
	b, _ := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	f := strings.Fields(string(b))
	u, _ := strconv.ParseFloat(f[13], 64)
	s, _ := strconv.ParseFloat(f[14], 64)
	return (u + s) / 100
}

func main() {
	url := flag.String("url", "amqp://guest:guest@127.0.0.1:5699/", "")
	pid := flag.Int("pid", 0, "broker pid")
	n := flag.Int("n", 8192, "messages")
	size := flag.Int("size", 65536, "body bytes")
	headers := flag.Bool("headers", false, "segmq-like headers")
	sac := flag.Bool("sac", false, "x-single-active-consumer + dead-letter args")
	mandatory := flag.Bool("mandatory", false, "")
	msgid := flag.Bool("msgid", false, "message id, content type")
	flag.Parse()
	conn, err := amqp.Dial(*url)
	if err != nil {
		panic(err)
	}
	defer conn.Close()
	ch, _ := conn.Channel()
	q := fmt.Sprintf("cost-%d", time.Now().UnixNano())
	args := amqp.Table{}
	if *sac {
		args["x-single-active-consumer"] = true
		args["x-dead-letter-exchange"] = ""
		args["x-dead-letter-routing-key"] = q + ".dead"
	}
	if _, err := ch.QueueDeclare(q, true, false, false, false, args); err != nil {
		panic(err)
	}
	defer ch.QueueDelete(q, false, false, false)
	cch, _ := conn.Channel()
	cch.Qos(256, 0, false)
	deliveries, err := cch.Consume(q, "", false, false, false, false, nil)
	if err != nil {
		panic(err)
	}
	done := make(chan struct{})
	go func() {
		i := 0
		for d := range deliveries {
			i++
			if i%64 == 0 || i == *n {
				d.Ack(true)
			}
			if i == *n {
				close(done)
				return
			}
		}
	}()
	ch.Confirm(false)
	body := make([]byte, *size)
	c0, t0 := brokerCPU(*pid), time.Now()
	var pend []*amqp.DeferredConfirmation
	for i := 0; i < *n; i++ {
		p := amqp.Publishing{DeliveryMode: amqp.Persistent, Body: body}
		if *headers {
			p.Headers = amqp.Table{"segmq-transfer": "f7205b98e089180310b2f68b23cbda8a", "segmq-run": "3311081c92f9c63b", "segmq-mss": int32(65528),
				"segmq-size": int64(1099801280), "segmq-crc32c": int64(123456789), "segmq-version": int32(1)}
		}
		if *msgid {
			p.MessageId, p.ContentType = fmt.Sprintf("f7205b98e089180310b2f68b23cbda8a/%d", i), "application/octet-stream"
		}
		dc, err := ch.PublishWithDeferredConfirmWithContext(context.Background(), "", q, *mandatory, false, p)
		if err != nil {
			panic(err)
		}
		pend = append(pend, dc)
		if len(pend) >= 256 {
			pend[0].Wait()
			pend = pend[1:]
		}
	}
	<-done
	el := time.Since(t0)
	fmt.Printf("headers=%v sac=%v mandatory=%v msgid=%v: %.1f MB/s, broker %.2f s CPU, %.0f us/msg\n", *headers, *sac, *mandatory, *msgid,
		float64(*n**size)/el.Seconds()/1e6, brokerCPU(*pid)-c0, (brokerCPU(*pid)-c0)/float64(*n)*1e6)
}
