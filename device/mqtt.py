# A small MQTT 3.1.1 client for the board: QoS 0/1 publish, last will,
# subscribe (QoS 0), keepalive, reconnect with backoff, and a bounded RAM queue.
#
# Why not umqtt.simple: it is frozen into ESP32 firmware but not Pico W's, and
# its QoS 1 publish blocks until PUBACK, which would stall sampling while the
# network is slow. This client never blocks: poll() drives a non-blocking
# socket from the main loop, and un-acknowledged messages stay queued (and are
# re-sent, DUP set, after a reconnect) instead of being lost.
import errno
import select
import socket
import struct
import time

DISCONNECTED, CONNECTING, WAIT_CONNACK, CONNECTED = 0, 1, 2, 3
# The largest incoming packet kept: CONNACK, PUBACK, SUBACK and a homeassistant/status
# PUBLISH are far smaller. A larger one (any client allowed to publish to a topic
# we subscribe to can send megabytes) is read through and discarded, never held.
MAX_PACKET = 1024


def _str(s):
    b = s.encode() if isinstance(s, str) else s
    return struct.pack("!H", len(b)) + b


def _packet(kind, body):
    n = len(body)
    head = bytearray([kind])
    while True:  # remaining length, 7 bits per byte
        byte = n & 0x7F
        n >>= 7
        head.append(byte | 0x80 if n else byte)
        if not n:
            return bytes(head) + body


class MQTTClient:
    def __init__(self, client_id, host, port=1883, user=None, password=None, keepalive=30,
                 will=None, queue_len=64, inflight_max=8, on_message=None, on_connect=None):
        self.client_id = client_id
        self.host, self.port = host, port
        self.user, self.password = user, password
        self.keepalive = keepalive
        self.will = will  # (topic, payload, retain)
        self.queue = []  # (topic, payload, qos, retain, dup), oldest first
        self.queue_len = queue_len
        self.inflight = []  # (packet id, message) awaiting PUBACK, in send order
        self.inflight_max = inflight_max
        self.on_message = on_message
        self.on_connect = on_connect
        self.subscriptions = []
        self.state = DISCONNECTED
        self.sock = None
        self.rx = b""
        self.skip = 0  # bytes of an oversize packet still to read through
        self.oversize = 0  # packets discarded for their size
        self.pid = 0
        self.backoff = 1000
        self.next_try = time.ticks_ms()
        self.last_tx = self.last_rx = time.ticks_ms()
        self.dropped = 0
        self.sent = 0
        self.connects = 0
        self.last_error = None

    # ---- public --------------------------------------------------------------------

    def publish(self, topic, payload, qos=0, retain=False):
        if len(self.queue) >= self.queue_len:
            self.queue.pop(0)  # drop the oldest: the newest says most about now
            self.dropped += 1
        self.queue.append((topic, payload, qos, retain, False))

    def subscribe(self, topic):
        self.subscriptions.append(topic)
        if self.state == CONNECTED:
            self._send_subscribe(topic)

    def pending(self):
        return len(self.queue) + len(self.inflight)

    def poll(self):
        """Advance the connection; never blocks. Call it often."""
        try:
            if self.state == DISCONNECTED:
                if time.ticks_diff(time.ticks_ms(), self.next_try) >= 0:
                    self._open()
            elif self.state == CONNECTING:
                self._check_connected()
            else:
                self._receive()
                if self.state == CONNECTED:
                    self._send_queued()
                    self._keepalive()
        except Exception as exc:  # OSError, a malformed packet, MemoryError: reconnect, never die
            self._lost(exc)

    # ---- connection ------------------------------------------------------------------

    def _open(self):
        addr = socket.getaddrinfo(self.host, self.port, 0, socket.SOCK_STREAM)[0][-1]
        self.sock = socket.socket()
        self.sock.setblocking(False)
        try:
            self.sock.connect(addr)
        except OSError as exc:
            if exc.args[0] not in (errno.EINPROGRESS, errno.EAGAIN):
                raise
        self.poller = select.poll()
        self.poller.register(self.sock, select.POLLOUT | select.POLLIN)
        self.state = CONNECTING
        self.opened = time.ticks_ms()

    def _check_connected(self):
        events = self.poller.poll(0)
        if not events:
            if time.ticks_diff(time.ticks_ms(), self.opened) > 5000:
                raise OSError(errno.ETIMEDOUT)
            return
        if events[0][1] & (select.POLLERR | select.POLLHUP):
            raise OSError(errno.ECONNREFUSED)
        self.poller.modify(self.sock, select.POLLIN)  # connected: from now on wait for data only
        flags = 0x02  # clean session: what matters is kept here, in the queue
        body = _str("MQTT") + bytes([4])
        payload = _str(self.client_id)
        if self.will:
            topic, msg, retain = self.will
            flags |= 0x04 | 0x08 | (0x20 if retain else 0)  # will, will QoS 1
            payload += _str(topic) + _str(msg)
        if self.user is not None:
            flags |= 0x80
            payload += _str(self.user)
            if self.password is not None:
                flags |= 0x40
                payload += _str(self.password)
        body += bytes([flags]) + struct.pack("!H", self.keepalive) + payload
        self._write(_packet(0x10, body))
        self.state = WAIT_CONNACK
        self.last_rx = time.ticks_ms()

    def _lost(self, exc):
        if self.sock:
            try:
                self.sock.close()
            except OSError:
                pass
        self.sock = None
        # un-acknowledged messages go back to the front of the queue, in order
        waiting = [msg[:4] + (True,) for _, msg in self.inflight]  # re-sent with DUP set
        self.inflight = []
        self.queue = waiting + self.queue
        while len(self.queue) > self.queue_len:
            self.queue.pop(0)
            self.dropped += 1
        self.state = DISCONNECTED
        self.last_error = exc
        self.next_try = time.ticks_add(time.ticks_ms(), self.backoff)
        self.backoff = min(self.backoff * 2, 30000)

    # ---- bytes -------------------------------------------------------------------------

    def _socket(self):
        if self.sock is None:
            raise OSError(errno.ENOTCONN)
        return self.sock

    def _write(self, data):
        sock = self._socket()
        view = memoryview(data)
        deadline = time.ticks_add(time.ticks_ms(), 2000)
        while view:
            try:
                n = sock.write(view)
            except OSError as exc:
                if exc.args[0] != errno.EAGAIN:
                    raise
                n = 0
            if n:
                view = view[n:]
            elif time.ticks_diff(time.ticks_ms(), deadline) > 0:
                raise OSError(errno.ETIMEDOUT)
        self.last_tx = time.ticks_ms()

    def _receive(self):
        sock = self._socket()
        while self.poller.poll(0):
            try:
                chunk = sock.read(512)
            except OSError as exc:
                if exc.args[0] == errno.EAGAIN:
                    break
                raise
            if chunk is None:  # non-blocking read with nothing waiting
                break
            if not chunk:
                raise OSError(errno.ECONNRESET)  # the broker closed the connection
            self.last_rx = time.ticks_ms()
            if self.skip:  # inside an oversize packet: read through it
                n = min(self.skip, len(chunk))
                self.skip -= n
                if n == len(chunk):
                    continue
                chunk = chunk[n:]
            self.rx += chunk
            self._dispatch()  # every chunk: what waits in rx is at most one packet's start
        self._dispatch()
        if self.state == WAIT_CONNACK and time.ticks_diff(time.ticks_ms(), self.last_rx) > 5000:
            raise OSError(errno.ETIMEDOUT)

    def _dispatch(self):
        while True:
            packet = self._next_packet()
            if packet is None:
                return
            self._handle(*packet)

    def _header(self, rx):
        """(header bytes, remaining length) of the packet at the front of rx, or None."""
        if len(rx) < 2:
            return None
        n, shift, i = 0, 0, 1
        while True:
            if i >= len(rx):
                return None
            if i > 4:
                raise ValueError("malformed remaining length")
            byte = rx[i]
            n |= (byte & 0x7F) << shift
            shift += 7
            i += 1
            if not byte & 0x80:
                return i, n

    def _drop_oversize(self):
        """Discard every packet at the front of rx longer than MAX_PACKET."""
        while True:
            head = self._header(self.rx)
            if head is None or head[1] <= MAX_PACKET:
                return
            i, n = head
            have = len(self.rx) - i
            self.oversize += 1
            if have >= n:
                self.rx = self.rx[i + n:]
            else:
                self.skip = n - have
                self.rx = b""
                return

    def _next_packet(self):
        self._drop_oversize()
        head = self._header(self.rx)
        if head is None:
            return None
        i, n = head
        rx = self.rx
        if len(rx) < i + n:
            return None
        self.rx = rx[i + n:]
        return rx[0], rx[i:i + n]

    def _handle(self, kind, body):
        t = kind & 0xF0
        if t == 0x20:  # CONNACK
            if body[1] != 0:
                reasons = {4: "bad user name or password", 5: "not authorized"}
                raise OSError("broker refused the connection: %s" % reasons.get(body[1], body[1]))
            self.state = CONNECTED
            self.connects += 1
            self.backoff = 1000
            for topic in self.subscriptions:
                self._send_subscribe(topic)
            if self.on_connect:
                self.on_connect()
        elif t == 0x40:  # PUBACK
            pid = struct.unpack("!H", body)[0]
            for i in range(len(self.inflight)):
                if self.inflight[i][0] == pid:
                    self.inflight.pop(i)
                    self.sent += 1
                    break
        elif t == 0x30:  # PUBLISH to us (QoS 0 subscriptions)
            n = struct.unpack("!H", body[:2])[0]
            topic = str(body[2:2 + n], "utf-8")
            start = 2 + n + (2 if kind & 0x06 else 0)
            if self.on_message:
                self.on_message(topic, bytes(body[start:]))

    # ---- sending -------------------------------------------------------------------------

    def _next_pid(self):
        self.pid = self.pid % 65535 + 1
        return self.pid

    def _send_publish(self, msg, pid):
        topic, payload, qos, retain, dup = msg
        data = payload.encode() if isinstance(payload, str) else payload
        body = _str(topic) + (struct.pack("!H", pid) if qos else b"") + data
        self._write(_packet(0x30 | (0x08 if dup else 0) | (qos << 1) | (1 if retain else 0), body))

    def _send_queued(self):
        while self.queue and len(self.inflight) < self.inflight_max:
            msg = self.queue[0]
            if msg[2]:
                pid = self._next_pid()
                self._send_publish(msg, pid)
                self.inflight.append((pid, msg))
            else:
                self._send_publish(msg, 0)
                self.sent += 1
            self.queue.pop(0)

    def _send_subscribe(self, topic):
        self._write(_packet(0x82, struct.pack("!H", self._next_pid()) + _str(topic) + b"\x00"))

    def _keepalive(self):
        if time.ticks_diff(time.ticks_ms(), self.last_tx) > self.keepalive * 500:
            self._write(b"\xc0\x00")  # PINGREQ
        if time.ticks_diff(time.ticks_ms(), self.last_rx) > self.keepalive * 1500:
            raise OSError(errno.ETIMEDOUT)  # no PINGRESP: the link is dead
