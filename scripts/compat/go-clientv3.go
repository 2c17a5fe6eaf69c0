// One endpoint driven through Go clientv3 3.4 (Debian's golang-etcd-server-dev, built offline in
// GOPATH mode): prints a transcript with revisions made relative to the first write and lease
// ids reduced to whether they are set, so that runs against detcd and etcd compare line for
// line. run.sh builds it, runs it against both and compares.
package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"io/ioutil"
	"os"
	"sort"
	"strings"
	"time"

	"go.etcd.io/etcd/clientv3"
	"go.etcd.io/etcd/clientv3/concurrency"
	pb "go.etcd.io/etcd/etcdserver/etcdserverpb"
	"go.etcd.io/etcd/mvcc/mvccpb"
	"go.uber.org/zap"
	"google.golang.org/grpc/codes"
)

var (
	cli  *clientv3.Client
	base int64
)

func ctx() context.Context {
	c, _ := context.WithTimeout(context.Background(), 5*time.Second)
	return c
}

// step prints one line: the step's value, or its error with the gRPC code the client saw.
func step(name string, f func() (interface{}, error)) {
	v, err := f()
	if err == nil {
		fmt.Printf("%s OK %v\n", name, v)
		return
	}
	code := ""
	if c, ok := err.(interface{ Code() codes.Code }); ok {
		code = c.Code().String() + " "
	}
	fmt.Printf("%s ERR %s%v\n", name, code, err)
}

func kv(k *mvccpb.KeyValue) string {
	if k == nil {
		return "nil"
	}
	return fmt.Sprintf("%s=%s c%d m%d v%d lease:%t", k.Key, k.Value, k.CreateRevision-base,
		k.ModRevision-base, k.Version, k.Lease != 0)
}

func kvs(list []*mvccpb.KeyValue) string {
	parts := make([]string, len(list))
	for i, k := range list {
		parts[i] = kv(k)
	}
	return "[" + strings.Join(parts, " ") + "]"
}

func get(key string, opts ...clientv3.OpOption) func() (interface{}, error) {
	return func() (interface{}, error) {
		r, err := cli.Get(ctx(), key, opts...)
		if err != nil {
			return nil, err
		}
		return fmt.Sprintf("count=%d more=%t rev=%d %s", r.Count, r.More, r.Header.Revision-base,
			kvs(r.Kvs)), nil
	}
}

func put(key, value string, opts ...clientv3.OpOption) func() (interface{}, error) {
	return func() (interface{}, error) {
		r, err := cli.Put(ctx(), key, value, opts...)
		if err != nil {
			return nil, err
		}
		return fmt.Sprintf("rev=%d prev=%s", r.Header.Revision-base, kv(r.PrevKv)), nil
	}
}

func del(key string, opts ...clientv3.OpOption) func() (interface{}, error) {
	return func() (interface{}, error) {
		r, err := cli.Delete(ctx(), key, opts...)
		if err != nil {
			return nil, err
		}
		return fmt.Sprintf("deleted=%d rev=%d prev=%s", r.Deleted, r.Header.Revision-base,
			kvs(r.PrevKvs)), nil
	}
}

func main() {
	var err error
	// The client logs each retried error with a time stamp; the transcript has the errors.
	quiet := zap.NewProductionConfig()
	quiet.Level = zap.NewAtomicLevelAt(zap.ErrorLevel)
	cli, err = clientv3.New(clientv3.Config{Endpoints: []string{os.Args[1]}, DialTimeout: 5 * time.Second,
		LogConfig: &quiet})
	if err != nil {
		fmt.Println("connect:", err)
		os.Exit(1)
	}
	defer cli.Close()
	r, err := cli.Put(ctx(), "/base", "x")
	if err != nil {
		fmt.Println("first put:", err)
		os.Exit(1)
	}
	base = r.Header.Revision
	kvSteps()
	txnSteps()
	leaseSteps()
	watchSteps()
	recipeSteps()
	maintenanceSteps()
	authSteps()
}

func kvSteps() {
	step("put", put("/a", "1"))
	step("put prev_kv", put("/a", "2", clientv3.WithPrevKV()))
	step("get", get("/a"))
	step("get missing", get("/missing"))
	for _, k := range []string{"/p/1", "/p/2", "/p/3", "/p0", "/q"} {
		step("put "+k, put(k, k))
	}
	step("prefix", get("/p/", clientv3.WithPrefix()))
	step("prefix limit", get("/p/", clientv3.WithPrefix(), clientv3.WithLimit(2)))
	step("prefix by key descending", get("/p/", clientv3.WithPrefix(),
		clientv3.WithSort(clientv3.SortByKey, clientv3.SortDescend)))
	step("prefix by value descending, limit", get("/p", clientv3.WithPrefix(), clientv3.WithLimit(2),
		clientv3.WithSort(clientv3.SortByValue, clientv3.SortDescend)))
	step("prefix by mod ascending", get("/p", clientv3.WithPrefix(),
		clientv3.WithSort(clientv3.SortByModRevision, clientv3.SortAscend)))
	step("first key", get("/p", clientv3.WithFirstKey()...))
	step("last create", get("/p", clientv3.WithLastCreate()...))
	step("keys only", get("/p/", clientv3.WithPrefix(), clientv3.WithKeysOnly()))
	step("count only", get("/p/", clientv3.WithPrefix(), clientv3.WithCountOnly()))
	step("range", get("/p/1", clientv3.WithRange("/p/3")))
	step("from key", get("/p/3", clientv3.WithFromKey()))
	step("min mod revision", get("/p", clientv3.WithPrefix(), clientv3.WithMinModRev(base+4)))
	step("max create revision", get("/p", clientv3.WithPrefix(), clientv3.WithMaxCreateRev(base+4)))
	step("serializable", get("/a", clientv3.WithSerializable()))
	step("at revision", get("/a", clientv3.WithRev(base+1)))
	step("at a future revision", get("/a", clientv3.WithRev(base+1000)))
	step("ignore value", put("/a", "", clientv3.WithIgnoreValue(), clientv3.WithPrevKV()))
	step("ignore value, missing key", put("/missing", "", clientv3.WithIgnoreValue()))
	step("ignore lease, missing key", put("/missing", "v", clientv3.WithIgnoreLease()))
	step("empty key", put("", "v"))
	step("request too large", put("/big", strings.Repeat("x", 1600*1024)))
	step("delete", del("/a"))
	step("delete missing", del("/a"))
	step("delete prefix prev_kv", del("/p/", clientv3.WithPrefix(), clientv3.WithPrevKV()))
	step("delete from key", del("/p0", clientv3.WithFromKey()))
}

func txn(cmps []clientv3.Cmp, then, els []clientv3.Op) func() (interface{}, error) {
	return func() (interface{}, error) {
		r, err := cli.Txn(ctx()).If(cmps...).Then(then...).Else(els...).Commit()
		if err != nil {
			return nil, err
		}
		return fmt.Sprintf("succeeded=%t rev=%d %s", r.Succeeded, r.Header.Revision-base,
			responses(r.Responses)), nil
	}
}

func responses(list []*pb.ResponseOp) string {
	var parts []string
	for _, op := range list {
		switch {
		case op.GetResponseRange() != nil:
			parts = append(parts, "range"+kvs(op.GetResponseRange().Kvs))
		case op.GetResponsePut() != nil:
			parts = append(parts, "put prev="+kv(op.GetResponsePut().PrevKv))
		case op.GetResponseDeleteRange() != nil:
			parts = append(parts, fmt.Sprintf("delete %d", op.GetResponseDeleteRange().Deleted))
		case op.GetResponseTxn() != nil:
			t := op.GetResponseTxn()
			parts = append(parts, fmt.Sprintf("txn(%t %s)", t.Succeeded, responses(t.Responses)))
		}
	}
	return "[" + strings.Join(parts, "; ") + "]"
}

func txnSteps() {
	cli.Put(ctx(), "/t", "v")
	cli.Put(ctx(), "/u/1", "a")
	cli.Put(ctx(), "/u/2", "b")
	all := []clientv3.Cmp{
		clientv3.Compare(clientv3.Value("/t"), "=", "v"),
		clientv3.Compare(clientv3.Version("/t"), ">", 0),
		clientv3.Compare(clientv3.CreateRevision("/t"), ">", 0),
		clientv3.Compare(clientv3.ModRevision("/t"), "<", base+1000),
		clientv3.Compare(clientv3.LeaseValue("/t"), "=", clientv3.NoLease),
	}
	nested := clientv3.OpTxn([]clientv3.Cmp{clientv3.Compare(clientv3.Value("/t"), "=", "w")},
		[]clientv3.Op{clientv3.OpGet("/t")}, []clientv3.Op{clientv3.OpPut("/t2", "never")})
	step("txn", txn(all, []clientv3.Op{clientv3.OpPut("/t", "w", clientv3.WithPrevKV()),
		clientv3.OpGet("/t"), clientv3.OpDelete("/nothing"), nested}, nil))
	step("txn else", txn([]clientv3.Cmp{clientv3.Compare(clientv3.Value("/t"), "=", "nope")},
		[]clientv3.Op{clientv3.OpPut("/t", "f")}, []clientv3.Op{clientv3.OpGet("/u/", clientv3.WithPrefix())}))
	step("txn compare over a prefix", txn(
		[]clientv3.Cmp{clientv3.Compare(clientv3.Value("/u/"), ">", "a").WithPrefix()},
		[]clientv3.Op{clientv3.OpGet("/u/1")}, []clientv3.Op{clientv3.OpGet("/u/2")}))
	step("txn compare over a range", txn(
		[]clientv3.Cmp{clientv3.Compare(clientv3.Version("/u/1").WithRange("/u/3"), "=", 1)},
		[]clientv3.Op{clientv3.OpGet("/u/1")}, nil))
	step("txn compare on a missing key", txn(
		[]clientv3.Cmp{clientv3.Compare(clientv3.CreateRevision("/none"), "=", 0)},
		[]clientv3.Op{clientv3.OpDelete("/u/", clientv3.WithPrefix(), clientv3.WithPrevKV())}, nil))
	step("txn duplicate key", txn(nil, []clientv3.Op{clientv3.OpPut("/d", "1"), clientv3.OpPut("/d", "2")}, nil))
	many := make([]clientv3.Op, 129)
	for i := range many {
		many[i] = clientv3.OpPut(fmt.Sprintf("/m/%d", i), "v")
	}
	step("txn too many operations", txn(nil, many, nil))
	step("txn empty key", txn(nil, []clientv3.Op{clientv3.OpPut("", "v")}, nil))
}

func leaseSteps() {
	step("grant", func() (interface{}, error) {
		r, err := cli.Grant(ctx(), 30)
		if err != nil {
			return nil, err
		}
		id := r.ID
		cli.Put(ctx(), "/l/1", "a", clientv3.WithLease(id))
		cli.Put(ctx(), "/l/2", "b", clientv3.WithLease(id))
		step("time to live", func() (interface{}, error) {
			t, err := cli.TimeToLive(ctx(), id, clientv3.WithAttachedKeys())
			if err != nil {
				return nil, err
			}
			// etcd lists a lease's keys in no particular order.
			keys := make([]string, len(t.Keys))
			for i, k := range t.Keys {
				keys[i] = string(k)
			}
			sort.Strings(keys)
			return fmt.Sprintf("granted=%d ttl_ok=%t keys=%q", t.GrantedTTL, t.TTL > 25 && t.TTL <= 30, keys), nil
		})
		step("leases", func() (interface{}, error) {
			l, err := cli.Leases(ctx())
			if err != nil {
				return nil, err
			}
			return len(l.Leases) == 1 && l.Leases[0].ID == id, nil
		})
		step("keep alive once", func() (interface{}, error) {
			k, err := cli.KeepAliveOnce(ctx(), id)
			if err != nil {
				return nil, err
			}
			return fmt.Sprintf("ttl=%d same=%t", k.TTL, k.ID == id), nil
		})
		step("keep alive", func() (interface{}, error) {
			c, cancel := context.WithCancel(context.Background())
			defer cancel()
			ch, err := cli.KeepAlive(c, id)
			if err != nil {
				return nil, err
			}
			k := <-ch
			return fmt.Sprintf("ttl=%d same=%t", k.TTL, k.ID == id), nil
		})
		step("get leased", get("/l/", clientv3.WithPrefix()))
		step("ignore lease", put("/l/1", "c", clientv3.WithIgnoreLease()))
		step("revoke", func() (interface{}, error) { _, err := cli.Revoke(ctx(), id); return "revoked", err })
		step("after revoke", get("/l/", clientv3.WithPrefix()))
		step("revoke again", func() (interface{}, error) { _, err := cli.Revoke(ctx(), id); return "revoked", err })
		step("keep alive once, revoked", func() (interface{}, error) {
			k, err := cli.KeepAliveOnce(ctx(), id)
			if err != nil {
				return nil, err
			}
			return k.TTL, nil
		})
		return id != 0, nil
	})
	step("time to live, unknown", func() (interface{}, error) {
		t, err := cli.TimeToLive(ctx(), 123456789)
		if err != nil {
			return nil, err
		}
		return t.TTL, nil
	})
	step("put, unknown lease", put("/x", "y", clientv3.WithLease(987654321)))
	step("grant, minimum ttl", func() (interface{}, error) {
		r, err := cli.Grant(ctx(), 1)
		if err != nil {
			return nil, err
		}
		cli.Revoke(ctx(), r.ID)
		return r.TTL, nil
	})
}

func event(e *clientv3.Event) string {
	return fmt.Sprintf("%s %s prev=%s create=%t modify=%t", e.Type, kv(e.Kv), kv(e.PrevKv),
		e.IsCreate(), e.IsModify())
}

// next is the watch channel's next response, or an error after five seconds.
func next(ch clientv3.WatchChan) (clientv3.WatchResponse, error) {
	select {
	case r, ok := <-ch:
		if !ok {
			return r, errors.New("watch channel closed")
		}
		return r, nil
	case <-time.After(5 * time.Second):
		return clientv3.WatchResponse{}, errors.New("no watch response in 5 s")
	}
}

// watchEvents opens a watch and reads until it has `want` events.
func watchEvents(key string, want int, opts ...clientv3.OpOption) func() (interface{}, error) {
	return func() (interface{}, error) {
		c, cancel := context.WithCancel(context.Background())
		defer cancel()
		ch := cli.Watch(c, key, opts...)
		var got []string
		for len(got) < want {
			r, err := next(ch)
			if err != nil {
				return strings.Join(got, " | "), err
			}
			if r.Err() != nil {
				return nil, r.Err()
			}
			for _, e := range r.Events {
				got = append(got, event(e))
			}
		}
		return strings.Join(got, " | "), nil
	}
}

func watchSteps() {
	step("watch prefix", func() (interface{}, error) {
		c, cancel := context.WithCancel(context.Background())
		defer cancel()
		ch := cli.Watch(c, "/w/", clientv3.WithPrefix(), clientv3.WithPrevKV(), clientv3.WithCreatedNotify())
		created, err := next(ch)
		if err != nil {
			return nil, err
		}
		cli.Put(ctx(), "/w/1", "a")
		cli.Put(ctx(), "/w/2", "b")
		cli.Put(ctx(), "/w/1", "c")
		cli.Delete(ctx(), "/w/1")
		got, err := watchEventsFrom(ch, 4)
		return fmt.Sprintf("created=%t rev=%d %s", created.Created, created.Header.Revision-base, got), err
	})
	first, _ := cli.Get(ctx(), "/w/2")
	from := first.Kvs[0].ModRevision - 1
	step("watch from a revision", watchEvents("/w/", 4, clientv3.WithPrefix(), clientv3.WithRev(from)))
	step("watch without puts", watchEvents("/w/", 1, clientv3.WithPrefix(), clientv3.WithRev(from),
		clientv3.WithFilterPut()))
	step("watch from key", watchEvents("/w/2", 1, clientv3.WithFromKey(), clientv3.WithRev(from)))
	step("request progress", func() (interface{}, error) {
		c, cancel := context.WithCancel(context.Background())
		defer cancel()
		ch := cli.Watch(c, "/w/", clientv3.WithPrefix(), clientv3.WithCreatedNotify())
		if _, err := next(ch); err != nil {
			return nil, err
		}
		if err := cli.RequestProgress(c); err != nil {
			return nil, err
		}
		r, err := next(ch)
		return fmt.Sprintf("progress=%t rev=%d events=%d", r.IsProgressNotify(), r.Header.Revision-base,
			len(r.Events)), err
	})
	step("watch a compacted revision", func() (interface{}, error) {
		cli.Put(ctx(), "/wc", "1")
		r, _ := cli.Put(ctx(), "/wc", "2")
		if _, err := cli.Compact(ctx(), r.Header.Revision); err != nil {
			return nil, err
		}
		c, cancel := context.WithCancel(context.Background())
		defer cancel()
		w, err := next(cli.Watch(c, "/wc", clientv3.WithRev(r.Header.Revision-1)))
		return fmt.Sprintf("canceled=%t compact=%d err=%v", w.Canceled, w.CompactRevision-base, w.Err()), err
	})
}

func watchEventsFrom(ch clientv3.WatchChan, want int) (string, error) {
	var got []string
	for len(got) < want {
		r, err := next(ch)
		if err != nil {
			return strings.Join(got, " | "), err
		}
		for _, e := range r.Events {
			got = append(got, event(e))
		}
	}
	return strings.Join(got, " | "), nil
}

func recipeSteps() {
	s1, err1 := concurrency.NewSession(cli, concurrency.WithTTL(10))
	s2, err2 := concurrency.NewSession(cli, concurrency.WithTTL(10))
	if err1 != nil || err2 != nil {
		fmt.Println("sessions:", err1, err2)
		return
	}
	m1, m2 := concurrency.NewMutex(s1, "/lock/"), concurrency.NewMutex(s2, "/lock/")
	step("lock", func() (interface{}, error) { return "locked", m1.Lock(ctx()) })
	step("lock held by another", func() (interface{}, error) {
		c, cancel := context.WithTimeout(context.Background(), 300*time.Millisecond)
		defer cancel()
		return "locked", m2.Lock(c)
	})
	step("unlock", func() (interface{}, error) { return "unlocked", m1.Unlock(ctx()) })
	step("lock once free", func() (interface{}, error) {
		err := m2.Lock(ctx())
		return strings.HasPrefix(m2.Key(), "/lock/"), err
	})
	step("unlock again", func() (interface{}, error) { return "unlocked", m2.Unlock(ctx()) })

	e1, e2 := concurrency.NewElection(s1, "/election/"), concurrency.NewElection(s2, "/election/")
	leader := func(e *concurrency.Election) func() (interface{}, error) {
		return func() (interface{}, error) {
			r, err := e.Leader(ctx())
			if err != nil {
				return nil, err
			}
			return candidate(r.Kvs[0]), nil
		}
	}
	step("campaign", func() (interface{}, error) { return "elected", e1.Campaign(ctx(), "v1") })
	step("leader", leader(e2))
	step("proclaim", func() (interface{}, error) { return "proclaimed", e1.Proclaim(ctx(), "v2") })
	step("observe", func() (interface{}, error) {
		c, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		r, ok := <-e2.Observe(c)
		if !ok {
			return nil, errors.New("observe ended")
		}
		return candidate(r.Kvs[0]), nil
	})
	step("resign", func() (interface{}, error) { return "resigned", e1.Resign(ctx()) })
	step("leader after resign", leader(e2))

	stm := func() (interface{}, error) {
		r, err := concurrency.NewSTM(cli, func(s concurrency.STM) error {
			s.Put("/stm", s.Get("/stm")+"x")
			return nil
		})
		if err != nil {
			return nil, err
		}
		return r.Succeeded, nil
	}
	step("stm", stm)
	step("stm again", stm)
	step("after stm", get("/stm"))
	step("close sessions", func() (interface{}, error) {
		err := s1.Close()
		if err2 := s2.Close(); err == nil {
			err = err2
		}
		return "closed", err
	})
	step("lock keys after close", get("/lock/", clientv3.WithPrefix(), clientv3.WithCountOnly()))
}

// candidate is an election key without its lease id, which differs between the servers.
func candidate(k *mvccpb.KeyValue) string {
	c := *k
	c.Key = []byte(strings.TrimRight(string(k.Key), "0123456789abcdef") + "<lease>")
	return kv(&c)
}

func maintenanceSteps() {
	ep := cli.Endpoints()[0]
	step("status", func() (interface{}, error) {
		r, err := cli.Status(ctx(), ep)
		if err != nil {
			return nil, err
		}
		return fmt.Sprintf("version=%t leader_is_self=%t db=%t index=%t term=%t", r.Version != "",
			r.Leader == r.Header.MemberId, r.DbSize > 0, r.RaftIndex > 0, r.RaftTerm > 0), nil
	})
	step("members", func() (interface{}, error) {
		r, err := cli.MemberList(ctx())
		if err != nil {
			return nil, err
		}
		m := r.Members[0]
		return fmt.Sprintf("%d %s peers=%d clients=%d learner=%t self=%t", len(r.Members), m.Name,
			len(m.PeerURLs), len(m.ClientURLs), m.IsLearner, m.ID == r.Header.MemberId), nil
	})
	step("alarms", func() (interface{}, error) {
		r, err := cli.AlarmList(ctx())
		if err != nil {
			return nil, err
		}
		return len(r.Alarms), nil
	})
	step("hash kv", func() (interface{}, error) {
		r, err := cli.HashKV(ctx(), ep, 0)
		if err != nil {
			return nil, err
		}
		return fmt.Sprintf("hash=%t compact=%d", r.Hash != 0, r.CompactRevision-base), nil
	})
	cli.Put(ctx(), "/c", "1")
	r, _ := cli.Put(ctx(), "/c", "2")
	rev := r.Header.Revision
	step("compact", func() (interface{}, error) {
		_, err := cli.Compact(ctx(), rev-1, clientv3.WithCompactPhysical())
		return "compacted", err
	})
	step("get compacted", get("/c", clientv3.WithRev(rev-2)))
	step("get at the compaction", get("/c", clientv3.WithRev(rev-1)))
	step("compact again", func() (interface{}, error) { _, err := cli.Compact(ctx(), 1); return "compacted", err })
	step("compact future", func() (interface{}, error) {
		_, err := cli.Compact(ctx(), rev+1000)
		return "compacted", err
	})
	step("defragment", func() (interface{}, error) { _, err := cli.Defragment(ctx(), ep); return "done", err })
	step("snapshot", func() (interface{}, error) {
		rc, err := cli.Snapshot(ctx())
		if err != nil {
			return nil, err
		}
		defer rc.Close()
		n, err := io.Copy(ioutil.Discard, rc)
		return n > 0, err
	})
}

func authSteps() {
	a := func(f func() error) func() (interface{}, error) {
		return func() (interface{}, error) { return "done", f() }
	}
	step("user add", a(func() error { _, err := cli.UserAdd(ctx(), "alice", "pw"); return err }))
	step("user add again", a(func() error { _, err := cli.UserAdd(ctx(), "alice", "pw"); return err }))
	step("role add", a(func() error { _, err := cli.RoleAdd(ctx(), "reader"); return err }))
	step("grant permission", a(func() error {
		_, err := cli.RoleGrantPermission(ctx(), "reader", "/k", "/l", clientv3.PermissionType(clientv3.PermRead))
		return err
	}))
	step("grant role", a(func() error { _, err := cli.UserGrantRole(ctx(), "alice", "reader"); return err }))
	step("grant a missing role", a(func() error { _, err := cli.UserGrantRole(ctx(), "alice", "nope"); return err }))
	step("user get", func() (interface{}, error) {
		r, err := cli.UserGet(ctx(), "alice")
		if err != nil {
			return nil, err
		}
		return r.Roles, nil
	})
	step("role get", func() (interface{}, error) {
		r, err := cli.RoleGet(ctx(), "reader")
		if err != nil {
			return nil, err
		}
		var perms []string
		for _, p := range r.Perm {
			perms = append(perms, fmt.Sprintf("%s %s..%s", p.PermType, p.Key, p.RangeEnd))
		}
		return perms, nil
	})
	step("user list", func() (interface{}, error) {
		r, err := cli.UserList(ctx())
		if err != nil {
			return nil, err
		}
		return r.Users, nil
	})
	step("role list", func() (interface{}, error) {
		r, err := cli.RoleList(ctx())
		if err != nil {
			return nil, err
		}
		return r.Roles, nil
	})
	step("auth enable without root", a(func() error { _, err := cli.AuthEnable(ctx()); return err }))
	step("revoke role", a(func() error { _, err := cli.UserRevokeRole(ctx(), "alice", "reader"); return err }))
	step("revoke permission", a(func() error { _, err := cli.RoleRevokePermission(ctx(), "reader", "/k", "/l"); return err }))
	step("user delete", a(func() error { _, err := cli.UserDelete(ctx(), "alice"); return err }))
	step("user delete missing", a(func() error { _, err := cli.UserDelete(ctx(), "alice"); return err }))
	step("role delete", a(func() error { _, err := cli.RoleDelete(ctx(), "reader"); return err }))
}
