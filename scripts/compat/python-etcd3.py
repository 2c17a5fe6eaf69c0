"""One endpoint driven through python-etcd3 (PyPI `etcd3` 0.12): prints a transcript with
revisions made relative to the first write, so that runs against detcd and etcd compare line
for line. run.sh runs it against both and compares."""
import sys, time, threading, io
import etcd3
from etcd3 import events

host, port = sys.argv[1].split(':')
c = etcd3.client(host=host, port=int(port), timeout=5)
out = []


def p(*a):
    out.append(' '.join(str(x) for x in a))


def meta(m):
    if m is None:
        return None
    lease = getattr(m, 'lease_id', getattr(m, 'lease', 0))
    return (m.key, m.create_revision - base, m.mod_revision - base, m.version, lease != 0)


def step(name, f):
    try:
        r = f()
        p(name, 'OK', r)
    except Exception as e:
        if callable(getattr(e, 'code', None)):
            p(name, 'ERR', e.code().name, e.details())
        else:
            p(name, 'ERR', type(e).__name__, str(e)[:200])


c.put('/base', 'x')
base = c.get('/base')[1].mod_revision

step('put', lambda: c.put('/a', '1') is not None)
step('put prev_kv', lambda: meta(c.put('/a', '2', prev_kv=True).prev_kv))
step('get', lambda: (c.get('/a')[0], meta(c.get('/a')[1])))
step('get missing', lambda: c.get('/missing'))
for k in ['/p/1', '/p/2', '/p/3', '/q']:
    c.put(k, k)
step('get_prefix', lambda: [(v, m.key) for v, m in c.get_prefix('/p')])
step('get_prefix sorted desc', lambda: [m.key for v, m in c.get_prefix('/p', sort_order='descend', sort_target='key')])
step('get_prefix keys_only', lambda: [(v, m.key) for v, m in c.get_prefix('/p', keys_only=True)])
step('get_range', lambda: [m.key for v, m in c.get_range('/p/1', '/p/3')])
step('get_all', lambda: sorted(m.key for v, m in c.get_all()))
step('replace ok', lambda: c.replace('/a', '2', '3'))
step('replace fail', lambda: c.replace('/a', '2', '4'))
step('delete', lambda: c.delete('/a'))
step('delete missing', lambda: c.delete('/a'))
step('delete prev_kv', lambda: c.delete('/q', prev_kv=True, return_response=True).deleted)
step('delete_prefix', lambda: c.delete_prefix('/p').deleted)

def txn():
    c.put('/t', 'v')
    ok, resp = c.transaction(
        compare=[c.transactions.value('/t') == 'v', c.transactions.version('/t') > 0,
                 c.transactions.create('/t') > 0, c.transactions.mod('/t') < 10 ** 9],
        success=[c.transactions.put('/t', 'w'), c.transactions.get('/t'), c.transactions.delete('/nothing')],
        failure=[c.transactions.get('/t')])
    return ok, [type(r).__name__ if not isinstance(r, list) else [(v, meta(m)) for v, m in r] for r in resp]
step('txn', txn)
step('txn fail', lambda: c.transaction(compare=[c.transactions.value('/t') == 'nope'],
                                       success=[], failure=[c.transactions.put('/t', 'f')])[0])

# leases
lease = c.lease(30)
step('lease ttl', lambda: lease.ttl)
step('lease remaining', lambda: 25 <= lease.remaining_ttl <= 30)
step('lease granted', lambda: lease.granted_ttl)
c.put('/l1', 'a', lease=lease)
c.put('/l2', 'b', lease=lease)
step('lease keys', lambda: sorted(lease.keys))
step('lease refresh', lambda: [r.TTL for r in lease.refresh()])
step('get leased', lambda: meta(c.get('/l1')[1]))
step('lease revoke', lambda: lease.revoke())
step('after revoke', lambda: c.get('/l1'))
step('revoke again', lambda: c.revoke_lease(lease.id))
step('ttl unknown', lambda: c.get_lease_info(123456789).TTL)
step('put unknown lease', lambda: c.put('/x', 'y', lease=987654321))
step('lease min ttl', lambda: c.lease(1).ttl)

# watch
def watch():
    got = []
    ev, cancel = c.watch_prefix('/w/')
    def reader():
        for e in ev:
            got.append((type(e).__name__, e.key, e.value))
            if len(got) == 3:
                break
    t = threading.Thread(target=reader)
    t.start()
    time.sleep(0.3)
    c.put('/w/1', 'a'); c.put('/w/2', 'b'); c.delete('/w/1')
    t.join(5)
    cancel()
    return got
step('watch_prefix', watch)

def watch_rev():
    r = c.get('/w/2')[1].mod_revision
    ev, cancel = c.watch('/w/2', start_revision=r - 1)
    first = next(ev)
    cancel()
    return type(first).__name__, first.key, first.mod_revision - base
step('watch start_revision', watch_rev)
step('watch_once timeout', lambda: c.watch_once('/never', timeout=0.5))

def watch_cb():
    got = []
    wid = c.add_watch_callback('/cb', lambda r: got.extend((type(e).__name__, e.value) for e in r.events))
    time.sleep(0.2)
    c.put('/cb', '1'); c.put('/cb', '2')
    time.sleep(0.5)
    c.cancel_watch(wid)
    return got
step('watch callback', watch_cb)

# the lock recipe python-etcd3 uses: a txn that creates the key only if absent
def lock():
    l1, l2 = c.lease(10), c.lease(10)
    free = c.transactions.create('/locks/res') == 0
    mine = c.transaction(compare=[free], success=[c.transactions.put('/locks/res', 'a', lease=l1)], failure=[])[0]
    theirs = c.transaction(compare=[free], success=[c.transactions.put('/locks/res', 'b', lease=l2)], failure=[])[0]
    l1.revoke()
    after = c.transaction(compare=[free], success=[c.transactions.put('/locks/res', 'b', lease=l2)], failure=[])[0]
    l2.revoke()
    return mine, theirs, after
step('lock', lock)

# maintenance
step('status', lambda: (c.status().version is not None, c.status().leader is not None, c.status().db_size > 0))
step('members', lambda: [(m.name, len(m.peer_urls), len(m.client_urls)) for m in c.members])
step('alarms', lambda: list(c.list_alarms()))
step('hash', lambda: isinstance(c.hash(), int))

def compact():
    c.put('/c', '1'); c.put('/c', '2')
    r = c.get('/c')[1].mod_revision
    c.compact(r - 1, physical=True)
    return c.get('/c')[0]
step('compact', compact)
step('compact again', lambda: c.compact(1))
step('compact future', lambda: c.compact(10 ** 9))
step('defrag', lambda: c.defragment() is not None)

def snap():
    f = io.BytesIO()
    c.snapshot(f)
    return len(f.getvalue()) > 0
step('snapshot', snap)
step('big value', lambda: c.put('/big', 'x' * (2 * 1024 * 1024)))
step('empty key', lambda: c.put('', 'v'))

print('\n'.join(out))
