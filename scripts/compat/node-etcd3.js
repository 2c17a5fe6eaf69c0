// One endpoint driven through npm's `etcd3` (1.1.2): prints a transcript with revisions made
// relative to the first write, so that runs against detcd and etcd compare line for line.
// run.sh runs it against both and compares.
const { Etcd3 } = require('etcd3');

const endpoint = process.argv[2];
const c = new Etcd3({ hosts: endpoint });
const out = [];
let base = 0;

const rel = (revision) => Number(revision) - base;
const meta = (kv) =>
  kv && [kv.key.toString(), rel(kv.create_revision), rel(kv.mod_revision), Number(kv.version), kv.lease !== '0'];
const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));

async function step(name, f) {
  try {
    out.push(`${name} OK ${JSON.stringify(await f())}`);
  } catch (e) {
    out.push(`${name} ERR ${e.constructor.name} ${String(e.message).slice(0, 200)}`);
  }
}

async function kv() {
  base = Number((await c.put('/base').value('x').exec()).header.revision);
  await step('put', async () => rel((await c.put('/a').value('1').exec()).header.revision));
  await step('put prev_kv', async () => meta(await c.put('/a').value('2').getPrevious()));
  await step('get', () => c.get('/a').string());
  await step('get meta', async () => meta((await c.get('/a').exec()).kvs[0]));
  await step('get missing', () => c.get('/missing').string());
  for (const k of ['/p/1', '/p/2', '/p/3', '/q']) await c.put(k).value(k);
  await step('prefix strings', () => c.getAll().prefix('/p').strings());
  await step('prefix keys desc', () => c.getAll().prefix('/p').sort('Key', 'Descend').keys());
  await step('prefix limit', async () => {
    const r = await c.getAll().prefix('/p').limit(2).exec();
    return [r.kvs.map((x) => x.key.toString()), r.more, r.count];
  });
  await step('prefix count', () => c.getAll().prefix('/p').count());
  await step('range', () => c.getAll().inRange({ start: '/p/1', end: '/p/3' }).keys());
  await step('all keys', async () => (await c.getAll().keys()).sort());
  await step('delete', async () => (await c.delete().key('/a').exec()).deleted);
  await step('delete missing', async () => (await c.delete().key('/a').exec()).deleted);
  await step('delete prev_kv', async () => (await c.delete().key('/q').getPrevious()).map(meta));
  await step('delete prefix', async () => (await c.delete().prefix('/p').exec()).deleted);
  await step('empty key', () => c.put('').value('v').exec());
}

async function txns() {
  await c.put('/t').value('v');
  await step('txn', async () => {
    const r = await c
      .if('/t', 'Value', '==', 'v')
      .and('/t', 'Version', '>', 0)
      .and('/t', 'Create', '>', 0)
      .then(c.put('/t').value('w'), c.get('/t'), c.delete().key('/nothing'))
      .else(c.get('/t'))
      .commit();
    return [r.succeeded, r.responses.map((x) => x.response)];
  });
  await step('txn fail', async () =>
    (await c.if('/t', 'Value', '==', 'nope').then(c.put('/t').value('f')).commit()).succeeded);
  await step('stm', async () => {
    await c.put('/stm').value('1');
    await c.stm().transact((tx) =>
      tx.get('/stm').then((v) => tx.put('/stm').value(String(Number(v) + 1))));
    return c.get('/stm').string();
  });
}

async function leases() {
  const lease = c.lease(30, { autoKeepAlive: false });
  await step('lease grant', async () => typeof (await lease.grant()));
  await step('lease time to live', async () => {
    const r = await c.leaseClient.leaseTimeToLive({ ID: await lease.grant(), keys: true });
    return [Number(r.TTL) > 25 && Number(r.TTL) <= 30, r.grantedTTL, r.keys.length];
  });
  await lease.put('/l1').value('a');
  await lease.put('/l2').value('b');
  await step('lease keepalive', async () => Number((await lease.keepaliveOnce()).TTL));
  await step('get leased', async () => meta((await c.get('/l1').exec()).kvs[0]));
  await step('lease revoke', async () => typeof (await lease.revoke()));
  await step('after revoke', () => c.get('/l1').string());
  await step('put unknown lease', () => c.put('/x').value('y').lease('987654321').exec());
  await step('revoke unknown', () => c.leaseClient.leaseRevoke({ ID: '123456789' }));
}

async function watches() {
  await step('watch prefix', async () => {
    const got = [];
    const w = await c.watch().prefix('/w/').withPreviousKV().create();
    w.on('put', (kv, prev) => got.push(['put', kv.key.toString(), kv.value.toString(), prev ? 'prev' : '-']));
    w.on('delete', (kv) => got.push(['delete', kv.key.toString()]));
    await c.put('/w/1').value('a');
    await c.put('/w/1').value('b');
    await c.delete().key('/w/1');
    for (let i = 0; i < 50 && got.length < 3; i++) await sleep(100);
    await w.cancel();
    return got;
  });
  await step('watch start revision', async () => {
    const r = Number((await c.put('/w/2').value('c').exec()).header.revision);
    await c.put('/w/2').value('d');
    const got = [];
    const w = await c.watch().key('/w/2').startRevision(String(r)).create();
    w.on('put', (kv) => got.push([kv.value.toString(), rel(kv.mod_revision)]));
    for (let i = 0; i < 50 && got.length < 2; i++) await sleep(100);
    await w.cancel();
    return got;
  });
  // The package maps ignore('put') to NODELETE and ignore('delete') to NOPUT.
  await step('watch ignore put', async () => {
    const got = [];
    const w = await c.watch().key('/w/3').ignore('put').create();
    w.on('put', () => got.push('put'));
    w.on('delete', () => got.push('delete'));
    await c.put('/w/3').value('x');
    await c.delete().key('/w/3');
    for (let i = 0; i < 50 && got.length < 1; i++) await sleep(100);
    await sleep(200);
    await w.cancel();
    return got;
  });
  await step('watch compacted', async () => {
    await c.put('/w/4').value('1');
    const r = Number((await c.put('/w/4').value('2').exec()).header.revision);
    await c.put('/w/4').value('3');
    await c.kv.compact({ revision: String(r), physical: true });
    const w = c.watch().key('/w/4').startRevision(String(r - 1)).watcher();
    const seen = [];
    w.on('data', (res) => seen.push([res.created, res.canceled, rel(res.compact_revision)]));
    w.on('error', (e) => seen.push(`${e.constructor.name} ${e.message}`));
    await sleep(1000);
    await w.cancel().catch(() => {});
    return seen;
  });
}

async function recipes() {
  // The package's lock is a try-lock: a second acquire fails while the first holds it.
  await step('lock', async () => {
    const first = await c.lock('/res').ttl(10).acquire();
    const second = c.lock('/res').ttl(10);
    const whileHeld = await second.acquire().then(() => 'acquired', (e) => e.constructor.name);
    await first.release();
    await second.acquire();
    await second.release();
    return whileHeld;
  });
  await step('election', async () => {
    const election = c.election('/elect', 10);
    const campaign = election.campaign('candidate-1');
    await new Promise((resolve, reject) => {
      campaign.on('elected', resolve);
      campaign.on('error', reject);
    });
    const leader = await election.leader();
    await campaign.resign();
    return leader;
  });
}

async function maintenance() {
  await step('status', async () => {
    const s = await c.maintenance.status();
    return [typeof s.version, s.leader !== '0', Number(s.dbSize) > 0];
  });
  await step('members', async () =>
    (await c.cluster.memberList({})).members.map((m) => [m.name, m.peerURLs.length, m.clientURLs.length]));
  await step('alarms', async () => (await c.maintenance.alarm({ action: 'Get' })).alarms);
  await step('compact future', () => c.kv.compact({ revision: '1000000000' }));
  await step('big value', () => c.put('/big').value('x'.repeat(2 * 1024 * 1024)).exec());
}

(async () => {
  for (const part of [kv, txns, leases, watches, recipes, maintenance]) await part();
  console.log(out.join('\n'));
  c.close();
  process.exit(0);
})();
