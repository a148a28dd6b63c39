# Sensors: each fills an int16 array of raw readings per sample.
# read(out) returns True when a new sample is in `out`; it may raise OSError
# (a bus glitch), which the main loop counts and survives.
import struct
import sys

from link import parse_sample


class Sensor:
    eof = False  # only a stream can end

    def read(self, out):
        raise NotImplementedError


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

    def read(self, out):
        while self.poll.poll(0):
            b = self.stdin.read(1)
            if not b:
                self.eof = True  # the host closed the link
                return False
            c = b[0]
            if c == 3:
                raise KeyboardInterrupt  # Ctrl-C: back to the REPL, as on a board
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
                    return True
            except ValueError:  # a garbled line: skip it, keep streaming
                self.n = 0
                continue
            if text.startswith("c ") and self.on_command:
                self.on_command(text[2:])
        return False


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


def make(cfg, channels, on_command=None):
    kind = cfg.get("kind", "stream")
    if kind == "stream":
        return StreamSensor(channels, on_command)
    if kind == "mpu6050":
        return MPU6050(cfg.get("i2c_bus", 0), cfg.get("i2c_sda", 4), cfg.get("i2c_scl", 5),
                       cfg.get("i2c_address", 0x68))
    if kind == "adc":
        return ADCSensor(cfg.get("adc_pin", 26))
    raise ValueError("unknown sensor kind %s" % kind)
