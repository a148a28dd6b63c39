# Sensors: each fills an int16 array of raw readings per sample.
# read(out) returns True when a new sample is in `out`; it may raise OSError
# (a bus glitch), which the main loop counts and survives.
import array
import struct
import sys

import micropython

from blob import crc32
from link import FRAME_SYNC, parse_sample


class Sensor:
    eof = False  # only a stream can end

    def read(self, out):
        raise NotImplementedError

    def read_block(self, block):
        """Audio samples into block (int16 little-endian bytes); how many. Only
        audio sensors (a microphone, the host's stream) have them."""
        raise OSError("this sensor gives readings, not audio: the model has a front-end")


FRAME_WAIT_MS = 200  # the rest of a binary frame follows its first byte at once


class StreamSensor(Sensor):
    """Samples arrive over the serial link from the host ("s v1 v2 ...").
    Other host lines (commands) are handed to on_command. Reads byte by byte
    whatever is waiting, so a Ctrl-C from a host tool is seen at once (the unix
    port has no interrupt character on a pseudo-terminal; boards raise it anyway)."""

    def __init__(self, channels, on_command=None):
        import select

        self.stdin = sys.stdin.buffer
        self.poll = select.poll()
        self.poll.register(sys.stdin, select.POLLIN)
        self.on_command = on_command
        self.line = bytearray(256)
        self.n = 0
        self.one = array.array("h", [0])  # a text sample line's reading, for read_block
        self.head = bytearray(2)
        self.crc = bytearray(4)
        self.spare = bytearray(1024)  # frames that come while no one wants audio
        self.bad_frames = 0
        try:  # a binary frame may hold a 0x03 byte: the port must not take it for Ctrl-C. Text
            micropython.kbd_intr(-1)  # Ctrl-C is seen below; pyexec restores it after main.py
        except AttributeError:
            pass

    def read(self, out):
        return self._next(out, None) == 1

    def read_block(self, block):
        """Audio samples into block (a bytearray of int16 little-endian): a binary
        frame's, or one text sample line's; returns how many (0: none complete yet)."""
        got = self._next(self.one, block)
        if got == 1:
            v = self.one[0]
            block[0] = v & 0xFF
            block[1] = (v >> 8) & 0xFF
        return got

    def _frame(self, block):
        """A binary frame after its sync byte (link.py): u16 n, n int16 samples,
        CRC-32 of the length and the samples. Returns n, or 0 for a damaged frame
        (skipped and counted)."""
        head = self.head
        self._exactly(head, 2)
        n = head[0] | head[1] << 8
        if n < 1 or 2 * n > len(block):
            self.bad_frames += 1
            return 0
        self._exactly(block, 2 * n)
        self._exactly(self.crc, 4)
        want = self.crc[0] | self.crc[1] << 8 | self.crc[2] << 16 | self.crc[3] << 24
        if crc32_more(memoryview(block)[:2 * n], crc32(head)) != want:
            self.bad_frames += 1
            return 0
        return n

    def _exactly(self, buf, n):
        got = 0
        mv = memoryview(buf)
        while got < n:
            if not self.poll.poll(FRAME_WAIT_MS):  # a frame cut short: drop it, read on
                self.bad_frames += 1
                raise OSError("audio frame cut short")
            k = self.stdin.readinto(mv[got:n])
            if not k:
                self.eof = True
                raise OSError("link closed inside a frame")
            got += k

    def _next(self, out, block):
        """1 when a text sample is in out, n > 1 when a binary frame of n samples is
        in block (None: frames are skipped), 0 when nothing is complete."""
        while self.poll.poll(0):
            b = self.stdin.read(1)
            if not b:
                self.eof = True  # the host closed the link
                return 0
            c = b[0]
            if c == 3:
                raise KeyboardInterrupt  # Ctrl-C: back to the REPL, as on a board
            if c == FRAME_SYNC and self.n == 0:
                n = self._frame(block if block is not None else self.spare)
                if n and block is not None:
                    return n
                continue
            if c != 10 and c != 13:
                if self.n < len(self.line):
                    self.line[self.n] = c
                    self.n += 1
                continue
            if self.n == 0:
                continue
            try:
                text = str(bytes(self.line[:self.n]), "utf-8")
                self.n = 0
                if parse_sample(text, out):
                    return 1
            except ValueError:  # a garbled line: skip it, keep streaming
                self.n = 0
                continue
            if text.startswith("c ") and self.on_command:
                self.on_command(text[2:])
        return 0


class MPU6050(Sensor):
    """6-axis IMU over I2C: accel x, y, z then gyro x, y, z, raw counts."""

    def __init__(self, bus=0, sda=4, scl=5, address=0x68):
        from machine import I2C, Pin

        self.i2c = I2C(bus, sda=Pin(sda), scl=Pin(scl), freq=400000)
        self.address = address
        self.buf = bytearray(14)
        self.i2c.writeto_mem(address, 0x6B, b"\x00")  # wake from sleep

    def read(self, out):
        self.i2c.readfrom_mem_into(self.address, 0x3B, self.buf)
        ax, ay, az, _, gx, gy, gz = struct.unpack(">7h", self.buf)
        out[0], out[1], out[2], out[3], out[4], out[5] = ax, ay, az, gx, gy, gz
        return True


class ADCSensor(Sensor):
    """One ADC channel, centred: read_u16() - 32768."""

    def __init__(self, pin=26):
        from machine import ADC, Pin

        self.adc = ADC(Pin(pin))

    def read(self, out):
        out[0] = self.adc.read_u16() - 32768
        return True


class I2SMic(Sensor):
    """An I2S MEMS microphone (INMP441, ICS-43434 class: 24 bits left-justified in
    32-bit slots, 64 clocks per frame) through machine.I2S, mono. read_block waits
    for a block; the driver's DMA buffer holds the samples that come meanwhile."""

    def __init__(self, i2s_id=0, sck=16, ws=17, sd=18, rate=16000, shift=12):
        from machine import I2S, Pin

        self.i2s = I2S(i2s_id, sck=Pin(sck), ws=Pin(ws), sd=Pin(sd), mode=I2S.RX, bits=32,
                       format=I2S.MONO, rate=int(rate), ibuf=8192)
        self.words = bytearray(4 * 256)
        self.shift = shift

    def read(self, out):
        raise OSError("an I2S microphone feeds a front-end model (read_block)")

    def read_block(self, block):
        n = self.i2s.readinto(self.words) // 4
        if n > len(block) // 2:
            n = len(block) // 2
        words_to_int16(self.words, block, n, self.shift)  # pyright: ignore[reportArgumentType]
        return n


class ADXL345(Sensor):
    """A 3-axis accelerometer on SPI (ADXL345 class: full resolution, 3.9 mg per
    count at any range, +-16 g), sampling on its own clock into its 32-deep FIFO
    (stream mode), read one sample per call: the FIFO absorbs the time a model
    step takes, so no sample is lost while the front-end computes a frame."""

    RATES = {100: 0x0A, 200: 0x0B, 400: 0x0C, 800: 0x0D, 1600: 0x0E, 3200: 0x0F}

    def __init__(self, bus=0, sck=2, mosi=3, miso=4, cs=5, rate=1600):
        from machine import SPI, Pin

        code = self.RATES.get(int(rate))
        if code is None:
            raise ValueError("adxl345: rate_hz must be one of 100, 200, 400, 800, 1600, 3200")
        self.cs = Pin(cs, Pin.OUT, value=1)
        self.spi = SPI(bus, baudrate=5000000, polarity=1, phase=1, sck=Pin(sck), mosi=Pin(mosi), miso=Pin(miso))
        self.cmd = bytearray(7)  # 0xC0 | register (read, multi-byte), then the bytes clocked in
        self.buf = bytearray(7)
        self.cmd2 = bytearray(2)
        self.buf2 = bytearray(2)
        if self._get(0x00) != 0xE5:
            raise OSError("adxl345: no device on SPI (device id is not 0xE5)")
        self._set(0x2D, 0x00)  # standby while configuring
        self._set(0x31, 0x0B)  # DATA_FORMAT: full resolution, +-16 g, 4-wire SPI
        self._set(0x2C, code)  # BW_RATE: output data rate
        self._set(0x38, 0x80)  # FIFO_CTL: stream mode (the oldest sample goes when full)
        self._set(0x2D, 0x08)  # POWER_CTL: measure
        self.left = 0  # samples the FIFO said it holds, not read yet
        self.xyz = array.array("h", [0, 0, 0])

    def read_block(self, block):
        """For a front-end model: what the FIFO holds as one stream of int16 samples,
        the three axes summed (the front-end's input; edge_agent/learn/anomaly.py
        frontend_samples on the host)."""
        n = 0
        most = len(block) // 2
        xyz = self.xyz
        while n < most and self.read(xyz):
            v = xyz[0] + xyz[1] + xyz[2]
            v = 32767 if v > 32767 else -32768 if v < -32768 else v
            block[2 * n] = v & 0xFF
            block[2 * n + 1] = (v >> 8) & 0xFF
            n += 1
        return n

    def _set(self, reg, value):
        self.cmd2[0], self.cmd2[1] = reg & 0x3F, value
        self.cs(0)
        self.spi.write(self.cmd2)
        self.cs(1)

    def _get(self, reg):
        self.cmd2[0], self.cmd2[1] = 0x80 | reg, 0
        self.cs(0)
        self.spi.write_readinto(self.cmd2, self.buf2)
        self.cs(1)
        return self.buf2[1]

    def read(self, out):
        if self.left == 0:
            self.left = self._get(0x39) & 0x3F  # FIFO_STATUS: entries
            if self.left == 0:
                return False
        self.cmd[0] = 0xC0 | 0x32  # DATAX0..DATAZ1 in one burst pops one FIFO entry
        self.cs(0)
        self.spi.write_readinto(self.cmd, self.buf)
        self.cs(1)
        b = self.buf
        for i in range(3):
            v = b[1 + 2 * i] | b[2 + 2 * i] << 8
            out[i] = v - 65536 if v > 32767 else v
        self.left -= 1
        return True


@micropython.viper
def words_to_int16(words: ptr16, out: ptr16, n: int, shift: int):
    # out[i] = sat(word_i >> shift, int16) for little-endian int32 words, read as
    # 16-bit halves (a ptr32 load is zero-extended on the unix port, not on boards).
    i = 0
    while i < n:
        v = (((words[2 * i + 1] ^ 0x8000) - 0x8000) << 16 | words[2 * i]) >> shift
        if v > 32767:
            v = 32767
        if v < 0 - 32768:
            v = 0 - 32768
        out[i] = v
        i += 1


def crc32_more(data, crc):
    """CRC-32 of data continuing from crc (binascii's, as blob.crc32 uses)."""
    from binascii import crc32 as _crc

    return _crc(data, crc) & 0xFFFFFFFF


def make(cfg, channels, on_command=None):
    kind = cfg.get("kind", "stream")
    if kind == "i2s":
        return I2SMic(cfg.get("i2s_id", 0), cfg.get("i2s_sck", 16), cfg.get("i2s_ws", 17), cfg.get("i2s_sd", 18),
                      cfg.get("rate_hz", 16000), cfg.get("i2s_shift", 12))
    if kind == "stream":
        return StreamSensor(channels, on_command)
    if kind == "mpu6050":
        return MPU6050(cfg.get("i2c_bus", 0), cfg.get("i2c_sda", 4), cfg.get("i2c_scl", 5),
                       cfg.get("i2c_address", 0x68))
    if kind == "adc":
        return ADCSensor(cfg.get("adc_pin", 26))
    if kind == "adxl345":
        return ADXL345(cfg.get("spi_bus", 0), cfg.get("spi_sck", 2), cfg.get("spi_mosi", 3), cfg.get("spi_miso", 4),
                       cfg.get("spi_cs", 5), cfg.get("rate_hz", 1600))
    raise ValueError("unknown sensor kind %s" % kind)
