"""Writes the seed sessions of the `client_requests` fuzz target (fuzz/README.md) into the
directory given: each a sequence of (kind, length, protobuf bytes) as the target reads it, the
protobuf encoded by hand (field number and wire type, varints)."""
import os
import sys

def varint(n):
    if n < 0: n += 1 << 64
    out = b''
    while True:
        b = n & 0x7f; n >>= 7
        if n: out += bytes([b | 0x80])
        else: return out + bytes([b])
def f_v(num, n): return varint(num << 3) + varint(n)
def f_b(num, b):
    if isinstance(b, str): b = b.encode()
    return varint((num << 3) | 2) + varint(len(b)) + b
def req(kind, body, token=None):
    assert len(body) < 256
    if token is not None:
        return bytes([kind | 0x80, len(token)]) + token.encode() + bytes([len(body)]) + body
    return bytes([kind, len(body)]) + body
RANGE, PUT, DEL, TXN, COMPACT, GRANT, REVOKE = 0, 1, 2, 3, 4, 5, 6
seeds = {
 'kv': req(PUT, f_b(1,'a')+f_b(2,'1')) + req(PUT, f_b(1,'b')+f_b(2,'2')+f_v(4,1)) +
       req(RANGE, f_b(1,'a')+f_b(2,'c')+f_v(3,1)+f_v(5,2)+f_v(6,3)) +
       req(DEL, f_b(1,'a')+f_b(2,'\0')+f_v(3,1)) + req(COMPACT, f_v(1,2)) +
       req(RANGE, f_b(1,'\0')+f_b(2,'\0')+f_v(4,1)),
 'txn': req(PUT, f_b(1,'k')+f_b(2,'v')) +
       req(TXN, f_b(1, f_v(1,0)+f_v(2,0)+f_b(3,'k')+f_v(4,1)) +
                f_b(2, f_b(2, f_b(1,'k')+f_b(2,'w')+f_v(4,1))) +
                f_b(2, f_b(4, f_b(2, f_b(3, f_b(1,'k')+f_v(3,1))))) +
                f_b(3, f_b(1, f_b(1,'k')+f_v(9,1)))),
 'lease': req(GRANT, f_v(1,5)+f_v(2,7)) + req(PUT, f_b(1,'l')+f_b(2,'v')+f_v(3,7)) +
       req(8, f_v(1,7)+f_v(2,1)) + req(7, f_v(1,7)) + req(9, b'') + req(REVOKE, f_v(1,7)) +
       req(RANGE, f_b(1,'l')),
 'auth': req(23, f_b(1,'root')+f_b(2,'p')) + req(30, f_b(1,'root')) +
       req(28, f_b(1,'root')+f_b(2,'root')) + req(30, f_b(1,'r')) +
       req(34, f_b(1,'r')+f_b(2, f_v(1,2)+f_b(2,'a')+f_b(3,'b'))) +
       req(20, b'') + req(PUT, f_b(1,'a')+f_b(2,'1')) +
       req(PUT, f_b(1,'a')+f_b(2,'1'), token='root.1') + req(22, b'') + req(36, f_b(1,'a')+f_b(2,'z')) +
       req(21, b'', token='x'),
 'cluster': req(10, f_v(1,1)) + req(37, f_b(1,'http://127.0.0.1:2380')+f_v(2,1)) + req(10, b'') +
       req(12, f_v(1,5)) + req(11, f_v(1,1)+f_b(2,'http://h:1')) + req(13, f_v(1,1)+f_v(2,0)+f_v(3,1)) +
       req(14, b'') + req(16, b'') + req(17, f_v(1,0)) + req(18, f_v(1,2)) + req(19, f_v(1,1)+f_b(2,'3.5.0')) + req(15, b''),
}
out = sys.argv[1]
os.makedirs(out, exist_ok=True)
for name, data in seeds.items():
    open(os.path.join(out, name), 'wb').write(data)
print(len(seeds), "seeds")
