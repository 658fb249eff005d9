// Appends one sio-relay entry with go-redis v9: the clients in room "user:42" of namespace "/"
// receive `order:shipped` with one argument, {"orderId":"A-1001","carrier":"UPS"}.
//
//	go mod tidy && go run .        (REDIS_URL, STREAM override the defaults)
//
// NOT run by sio-relay's tests: the machines they run on have no Go toolchain, nor a module
// proxy to fetch go-redis from (hence no go.sum here: go mod tidy writes it).
//
// Field values are strings: JSON arguments go through json.Marshal. MaxLen with Approx caps the
// stream; keep it far above what the relay may have to catch up on.
package main

import (
	"context"
	"encoding/json"
	"fmt"
	"log"
	"os"

	"github.com/redis/go-redis/v9"
)

func env(name, fallback string) string {
	if value := os.Getenv(name); value != "" {
		return value
	}
	return fallback
}

func main() {
	ctx := context.Background()
	options, err := redis.ParseURL(env("REDIS_URL", "redis://127.0.0.1:6379"))
	if err != nil {
		log.Fatal(err)
	}
	rdb := redis.NewClient(options)
	defer rdb.Close()

	data, err := json.Marshal(map[string]string{"orderId": "A-1001", "carrier": "UPS"})
	if err != nil {
		log.Fatal(err)
	}
	id, err := rdb.XAdd(ctx, &redis.XAddArgs{
		Stream: env("STREAM", "sio-relay"),
		MaxLen: 1_000_000,
		Approx: true,
		Values: []string{"room", "user:42", "event", "order:shipped", "data", string(data)},
	}).Result()
	if err != nil {
		log.Fatal(err)
	}
	fmt.Println(id)
}
