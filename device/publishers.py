# Where detections and status go. A publisher has publish(kind, payload) and
# poll(); serial is here, MQTT joins it behind the same two methods.
import sys

from link import frame


class SerialPublisher:
    """Checksummed lines on the USB serial console (sys.stdout)."""

    def __init__(self, stream=None):
        self.out = stream or sys.stdout

    def publish(self, kind, payload):
        self.out.write(frame(kind, payload))

    def poll(self):
        pass
