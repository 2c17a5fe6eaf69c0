// The Kubernetes watch pattern through Go clientv3 3.4, against a cluster whose leader is
// killed while it runs (failover.sh kills and restarts it): a watcher of a prefix with prev_kv
// and progress notifications on a stream that requires a leader, re-created from its last
// revision + 1 whenever it ends, as the apiserver's cache does; progress requested on that
// stream three times a second; and a writer that updates keys with optimistic transactions
// (read, then put if the key's mod revision is still the one read).
//
// At the end the watcher's events are judged against the prefix's whole history, read with a
// fresh watch from the start: every event exactly once and in order (nothing lost across the
// failovers), each event's prev_kv the key's previous event, every acknowledged write present
// with its value at its revision, and every progress notification a bookmark (no event at or
// below its revision arrived after it). Prints a summary; exits 1 on any violation.
//
// Usage: go-kubernetes-watch ENDPOINTS SECONDS
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
	"go.uber.org/zap"
)

const prefix = "/k/"

type event struct {
	typ      string
	key      string
	value    string
	rev      int64
	prevSet  bool
	prevVal  string
	prevMod  int64
	isCreate bool
}

func fromClient(e *clientv3.Event) event {
	ev := event{typ: e.Type.String(), key: string(e.Kv.Key), value: string(e.Kv.Value),
		rev: e.Kv.ModRevision, isCreate: e.IsCreate()}
	if e.PrevKv != nil {
		ev.prevSet, ev.prevVal, ev.prevMod = true, string(e.PrevKv.Value), e.PrevKv.ModRevision
	}
	return ev
}

// bookmark is a progress notification: its revision, and how many events had arrived by then.
type bookmark struct {
	rev      int64
	received int
}

type watcher struct {
	mu         sync.Mutex
	events     []event
	bookmarks  []bookmark
	recreated  int
	endings    map[string]int
	lastRev    int64
	progressOn context.Context
}

func main() {
	endpoints := strings.Split(os.Args[1], ",")
	seconds, _ := strconv.Atoi(os.Args[2])
	quiet := zap.NewProductionConfig()
	quiet.Level = zap.NewAtomicLevelAt(zap.FatalLevel)
	cli, err := clientv3.New(clientv3.Config{Endpoints: endpoints, DialTimeout: 2 * time.Second,
		LogConfig: &quiet})
	if err != nil {
		fail("connect: %v", err)
	}
	defer cli.Close()
	start := mustPut(cli, prefix+"start", "x")
	w := &watcher{endings: map[string]int{}, progressOn: clientv3.WithRequireLeader(context.Background())}
	stop := make(chan struct{})
	var wg sync.WaitGroup
	wg.Add(2)
	go func() { defer wg.Done(); w.watch(cli, start+1, stop) }()
	go func() { defer wg.Done(); requestProgress(cli, w.progressOn, stop) }()
	acked, conflicts, failed := write(cli, time.Now().Add(time.Duration(seconds)*time.Second))
	last := mustPut(cli, prefix+"end", "x")
	w.waitFor(last, 20*time.Second)
	close(stop)
	wg.Wait()
	history := wholeHistory(cli, start+1, last)
	violations := judge(w, history, acked)
	fmt.Printf("%d writes acknowledged (%d conflicts, %d failed), %d events received, %d in the history, "+
		"%d bookmarks, watch re-created %d times %v\n", len(acked), conflicts, failed, len(w.events),
		len(history), len(w.bookmarks), w.recreated, w.endings)
	for _, v := range violations {
		fmt.Println("VIOLATION:", v)
	}
	if len(violations) > 0 || len(acked) == 0 || len(w.bookmarks) == 0 {
		os.Exit(1)
	}
}

func fail(format string, a ...interface{}) {
	fmt.Printf(format+"\n", a...)
	os.Exit(1)
}

// mustPut retries a put until it is acknowledged (a leader may be down) and returns its revision.
func mustPut(cli *clientv3.Client, key, value string) int64 {
	for attempt := 0; attempt < 60; attempt++ {
		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		r, err := cli.Put(ctx, key, value)
		cancel()
		if err == nil {
			return r.Header.Revision
		}
		time.Sleep(250 * time.Millisecond)
	}
	fail("no put of %s acknowledged in a minute", key)
	return 0
}

// watch keeps a watcher of the prefix open from `from` on, re-creating it from the last
// received revision + 1 whenever it ends (the member lost its leader, or the client gave up).
func (w *watcher) watch(cli *clientv3.Client, from int64, stop chan struct{}) {
	for {
		select {
		case <-stop:
			return
		default:
		}
		ctx, cancel := context.WithCancel(w.progressOn)
		ch := cli.Watch(ctx, prefix, clientv3.WithPrefix(), clientv3.WithPrevKV(),
			clientv3.WithProgressNotify(), clientv3.WithRev(from))
		from = w.read(ch, from, stop)
		cancel()
		w.mu.Lock()
		w.recreated++
		w.mu.Unlock()
	}
}

// read takes a watch channel's responses until it ends; returns the revision to resume from.
func (w *watcher) read(ch clientv3.WatchChan, from int64, stop chan struct{}) int64 {
	for {
		select {
		case <-stop:
			return from
		case r, ok := <-ch:
			if !ok {
				w.ended("closed")
				return from
			}
			if err := r.Err(); err != nil {
				w.ended(err.Error())
				return from
			}
			w.mu.Lock()
			if r.IsProgressNotify() {
				w.bookmarks = append(w.bookmarks, bookmark{r.Header.Revision, len(w.events)})
			}
			for _, e := range r.Events {
				w.events = append(w.events, fromClient(e))
				from = e.Kv.ModRevision + 1
				w.lastRev = e.Kv.ModRevision
			}
			w.mu.Unlock()
		}
	}
}

func (w *watcher) ended(why string) {
	w.mu.Lock()
	w.endings[why]++
	w.mu.Unlock()
}

func (w *watcher) waitFor(rev int64, limit time.Duration) {
	deadline := time.Now().Add(limit)
	for time.Now().Before(deadline) {
		w.mu.Lock()
		done := w.lastRev >= rev
		w.mu.Unlock()
		if done {
			return
		}
		time.Sleep(50 * time.Millisecond)
	}
}

func requestProgress(cli *clientv3.Client, on context.Context, stop chan struct{}) {
	tick := time.NewTicker(300 * time.Millisecond)
	defer tick.Stop()
	for {
		select {
		case <-stop:
			return
		case <-tick.C:
			ctx, cancel := context.WithTimeout(on, time.Second)
			cli.RequestProgress(ctx)
			cancel()
		}
	}
}

// write updates eight keys in turn with optimistic transactions until the deadline; returns
// the acknowledged writes by revision, and how many transactions lost or failed.
func write(cli *clientv3.Client, until time.Time) (map[int64]event, int, int) {
	acked := map[int64]event{}
	conflicts, failed := 0, 0
	for n := 0; time.Now().Before(until); n++ {
		key := fmt.Sprintf("%s%d", prefix, n%8)
		value := strconv.Itoa(n)
		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		got, err := cli.Get(ctx, key)
		if err == nil {
			var mod int64
			if len(got.Kvs) > 0 {
				mod = got.Kvs[0].ModRevision
			}
			var r *clientv3.TxnResponse
			r, err = cli.Txn(ctx).If(clientv3.Compare(clientv3.ModRevision(key), "=", mod)).
				Then(clientv3.OpPut(key, value)).Commit()
			if err == nil && r.Succeeded {
				acked[r.Header.Revision] = event{typ: "PUT", key: key, value: value, rev: r.Header.Revision}
			} else if err == nil {
				conflicts++
			}
		}
		cancel()
		if err != nil {
			failed++
			time.Sleep(50 * time.Millisecond)
		}
	}
	return acked, conflicts, failed
}

// wholeHistory reads the prefix's events from `from` through `last` with a fresh watch.
func wholeHistory(cli *clientv3.Client, from, last int64) []event {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	var all []event
	for r := range cli.Watch(ctx, prefix, clientv3.WithPrefix(), clientv3.WithPrevKV(), clientv3.WithRev(from)) {
		if err := r.Err(); err != nil {
			fail("reading the history: %v", err)
		}
		for _, e := range r.Events {
			all = append(all, fromClient(e))
		}
		if len(all) > 0 && all[len(all)-1].rev >= last {
			return all
		}
	}
	fail("the history ended before revision %d", last)
	return nil
}

func judge(w *watcher, history []event, acked map[int64]event) []string {
	var violations []string
	report := func(format string, a ...interface{}) {
		if len(violations) < 20 {
			violations = append(violations, fmt.Sprintf(format, a...))
		}
	}
	if len(w.events) != len(history) {
		report("received %d events, the history has %d", len(w.events), len(history))
	}
	for i := 0; i < len(w.events) && i < len(history); i++ {
		if w.events[i] != history[i] {
			report("event %d: received %+v, the history has %+v", i, w.events[i], history[i])
		}
	}
	checkPrevKvs(history, report)
	byRev := map[int64]event{}
	for _, e := range history {
		byRev[e.rev] = e
	}
	for rev, a := range acked {
		e, ok := byRev[rev]
		if !ok || e.key != a.key || e.value != a.value || e.typ != "PUT" {
			report("acknowledged write %+v is not in the history (found %+v)", a, e)
		}
	}
	for _, b := range w.bookmarks {
		for _, e := range w.events[b.received:] {
			if e.rev <= b.rev {
				report("event at revision %d arrived after a bookmark at %d", e.rev, b.rev)
				break
			}
		}
	}
	return violations
}

// checkPrevKvs holds each event's prev_kv to the key's previous event in the history.
func checkPrevKvs(history []event, report func(string, ...interface{})) {
	latest := map[string]event{}
	for _, e := range history {
		if p, ok := latest[e.key]; ok && p.typ == "PUT" {
			if !e.prevSet || e.prevVal != p.value || e.prevMod != p.rev {
				report("event %+v: prev_kv should be the put at %d", e, p.rev)
			}
		}
		if e.typ == "PUT" && e.isCreate != (latest[e.key].typ != "PUT") {
			report("event %+v: is_create wrong", e)
		}
		latest[e.key] = e
	}
}
