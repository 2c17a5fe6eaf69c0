// Writers for the availability probe: N goroutines, each with its own clientv3 client on all
// endpoints, putting in a loop with a 1 s timeout; each acknowledged put's time is printed as
// "<writer> <unix seconds>".
package main

import (
	"context"
	"fmt"
	"os"
	"strconv"
	"strings"
	"sync"
	"time"

	"go.etcd.io/etcd/clientv3"
)

func main() {
	endpoints := strings.Split(os.Args[1], ",")
	writers, _ := strconv.Atoi(os.Args[2])
	seconds, _ := strconv.Atoi(os.Args[3])
	stop := time.Now().Add(time.Duration(seconds) * time.Second)
	var mu sync.Mutex
	var wg sync.WaitGroup
	for w := 0; w < writers; w++ {
		wg.Add(1)
		go func(w int) {
			defer wg.Done()
			cli, err := clientv3.New(clientv3.Config{Endpoints: endpoints, DialTimeout: 2 * time.Second})
			if err != nil {
				fmt.Fprintln(os.Stderr, err)
				return
			}
			defer cli.Close()
			for time.Now().Before(stop) {
				ctx, cancel := context.WithTimeout(context.Background(), time.Second)
				_, err := cli.Put(ctx, fmt.Sprintf("k%d", w), "v")
				cancel()
				if err == nil {
					now := float64(time.Now().UnixNano()) / 1e9
					mu.Lock()
					fmt.Printf("%d %.6f\n", w, now)
					mu.Unlock()
				}
			}
		}(w)
	}
	wg.Wait()
}
