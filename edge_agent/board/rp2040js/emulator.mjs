// An emulated Raspberry Pi Pico running the official MicroPython firmware, on rp2040js.
//
//   node emulator.mjs --uf2 FIRMWARE.uf2 --bootrom BOOTROM.bin --flash FS.bin --fd N
//
// fd N is the master side of a pseudo-terminal the caller opened (non-blocking): the
// board's USB CDC serial port is bridged to it. Events go to stdout, one line each
// ("connected", "reset watchdog|force", "halt ..."); diagnostics to stderr.
//
// What stock rp2040js lacks, and what stands in for it here (see the firmware README):
// - QSPI flash erase/program: the bootrom's flash_range_erase ('RE') and
//   flash_range_program ('RP') entry points are patched with BKPT and serviced in
//   onBreak. The file system region (flash offset 0xA0000 onward) is written through
//   to FS.bin, so the board keeps its files across runs as a real one does.
// - The watchdog: on expiry (or a forced trigger: machine.reset()) the chip is
//   replaced by a fresh RP2040 holding the same flash, as a real reset does.
// - A cycle counter for the guest: WATCHDOG SCRATCH0 reads the low 32 bits of the
//   board's clock in 125 MHz cycles, SCRATCH1 the high bits (the firmware uses only
//   SCRATCH4..7). Board time never runs ahead of wall time: an idle board sleeps.
import { readFileSync, writeSync, readSync, openSync, closeSync, existsSync } from 'node:fs';
import { RP2040, USBCDC, ConsoleLogger, LogLevel } from 'rp2040js';

const FLASH_BASE = 0x10000000;
const FS_OFFSET = 0xa0000; // RPI_PICO: the last 1408 KiB of its 2 MiB flash
const FS_SIZE = 0x200000 - FS_OFFSET;
const NS_PER_CYCLE = 8; // rp2040js runs the core at a fixed 125 MHz
const WATCHDOG = 0x40058;
const SCRATCH0 = 0x0c;
const SCRATCH1 = 0x10;
const BKPT_ERASE = 0xe1;
const BKPT_PROGRAM = 0xe2;
// Board time a real W25Q16 spends (typical datasheet figures): a flash write is not
// free on a real board, and the watchdog keeps counting through it.
const ERASE_NS_PER_4K = 45e6;
const PROGRAM_NS_PER_256 = 0.4e6;

function die(msg) {
  process.stderr.write(`error: ${msg}\n`);
  process.exit(2);
}

function args(argv) {
  const out = {};
  for (let i = 0; i < argv.length; i += 2) {
    if (!argv[i].startsWith('--') || argv[i + 1] === undefined) die(`bad argument ${argv[i]}`);
    out[argv[i].slice(2)] = argv[i + 1];
  }
  for (const k of ['uf2', 'bootrom', 'flash', 'fd']) if (!(k in out)) die(`--${k} is required`);
  return out;
}

function readUF2(path) {
  const data = readFileSync(path);
  const blocks = [];
  for (let off = 0; off + 512 <= data.length; off += 512) {
    const magic0 = data.readUInt32LE(off);
    const magic1 = data.readUInt32LE(off + 4);
    const flags = data.readUInt32LE(off + 8);
    if (magic0 !== 0x0a324655 || magic1 !== 0x9e5d5157) die(`${path}: not a UF2 file`);
    if (flags & 1) continue; // "not main flash"
    if (flags & 0x2000 && data.readUInt32LE(off + 28) !== 0xe48bff56) {
      die(`${path}: not an RP2040 UF2 (family 0x${data.readUInt32LE(off + 28).toString(16)})`);
    }
    const addr = data.readUInt32LE(off + 12);
    const size = data.readUInt32LE(off + 16);
    if (addr < FLASH_BASE || addr + size > FLASH_BASE + FS_OFFSET) {
      die(`${path}: block at 0x${addr.toString(16)} is outside the RPI_PICO firmware area`);
    }
    blocks.push([addr - FLASH_BASE, data.subarray(off + 32, off + 32 + size)]);
  }
  if (!blocks.length) die(`${path}: no flash blocks`);
  return blocks;
}

// The bootrom with BKPTs on the two flash-writing ROM functions.
function patchedBootrom(path) {
  const raw = readFileSync(path);
  if (raw.length !== 16384) die(`${path}: not an RP2040 bootrom (expected 16384 bytes, got ${raw.length})`);
  const rom = new Uint32Array(raw.buffer.slice(raw.byteOffset, raw.byteOffset + raw.length));
  const u16 = (a) => raw.readUInt16LE(a);
  const setU16 = (a, v) => {
    const w = rom[a >> 2];
    rom[a >> 2] = a & 2 ? (w & 0xffff) | (v << 16) : (w & 0xffff0000) | v;
  };
  const code = (a, b) => a.charCodeAt(0) | (b.charCodeAt(0) << 8);
  const found = {};
  for (let p = u16(0x14); p + 4 <= raw.length && u16(p); p += 4) found[u16(p)] = u16(p + 2);
  const erase = found[code('R', 'E')];
  const program = found[code('R', 'P')];
  if (!erase || !program) die(`${path}: no flash functions in its ROM table (not a B1 bootrom?)`);
  setU16(erase & ~1, 0xbe00 | BKPT_ERASE);
  setU16(program & ~1, 0xbe00 | BKPT_PROGRAM);
  return rom;
}

// rp2040js does not emulate the second core and its FIFO; the firmware touches them at
// boot, which only says "invalid SIO address": harmless, so not shown.
const consoleWarn = console.warn;
console.warn = (...a) => /invalid SIO address/.test(String(a[0])) || consoleWarn(...a);

const opt = args(process.argv.slice(2));
const fd = Number(opt.fd);
const bootrom = patchedBootrom(opt.bootrom);
const firmware = readUF2(opt.uf2);

// The flash image outlives chips: a watchdog reset makes a new RP2040 around it.
const flashImage = new Uint8Array(16 * 1024 * 1024).fill(0xff);
for (const [off, payload] of firmware) flashImage.set(payload, off);
let fsFile;
try {
  if (existsSync(opt.flash)) {
    const saved = readFileSync(opt.flash);
    flashImage.set(saved.subarray(0, FS_SIZE), FS_OFFSET);
    fsFile = openSync(opt.flash, 'r+');
  } else {
    fsFile = openSync(opt.flash, 'w+');
    writeSync(fsFile, flashImage.subarray(FS_OFFSET, FS_OFFSET + FS_SIZE), 0, FS_SIZE, 0);
  }
} catch (e) {
  die(`${opt.flash}: ${e.message}`);
}

function persist(off, len) {
  const start = Math.max(off, FS_OFFSET);
  const end = Math.min(off + len, FS_OFFSET + FS_SIZE);
  if (end > start) writeSync(fsFile, flashImage, start, end - start, start - FS_OFFSET);
}

function event(line) {
  writeSync(1, line + '\n');
}

// Host -> board bytes wait here until the board's CDC OUT endpoint asks for them. A read
// with nothing to give stays pending (a real host NAKs) instead of completing empty,
// so an idle board really idles.
const inbox = [];
let inboxBytes = 0;
let pendingRead = 0;
const outbox = [];

let mcu, cdc, stallNs, resetWhy, halted;

function boot(reason) {
  mcu = new RP2040();
  mcu.logger = new ConsoleLogger(LogLevel.Error);
  mcu.loadBootrom(bootrom);
  mcu.flash.set(flashImage); // share nothing: the chip's flash is copied back on writes below
  stallNs = 0;
  resetWhy = null;
  halted = false;
  const wd = mcu.peripherals[WATCHDOG];
  if (reason) wd.reason = reason;
  const readWd = wd.readUint32.bind(wd);
  wd.readUint32 = (offset) => {
    const cycles = Math.floor(mcu.clock.nanos / NS_PER_CYCLE);
    if (offset === SCRATCH0) return cycles % 0x100000000;
    if (offset === SCRATCH1) return Math.floor(cycles / 0x100000000);
    return readWd(offset);
  };
  wd.onWatchdogTrigger = () => {
    // Stop it here: stock rp2040js re-fires an expired watchdog at the same instant forever.
    wd.timer.enable = false;
    wd.alarm.enable = false;
    resetWhy = wd.reason & 2 ? 'force' : 'watchdog';
  };
  mcu.onBreak = (code) => {
    const r = mcu.core.registers;
    if (code === BKPT_ERASE) {
      const [off, count] = [r[0], r[1]];
      flashImage.fill(0xff, off, off + count);
      mcu.flash.fill(0xff, off, off + count);
      persist(off, count);
      stallNs += (ERASE_NS_PER_4K * count) / 4096;
    } else if (code === BKPT_PROGRAM) {
      const [off, src, count] = [r[0], r[1], r[2]];
      for (let i = 0; i < count; i++) {
        const v = mcu.flash[off + i] & mcu.readUint8(src + i); // NOR flash only clears bits
        mcu.flash[off + i] = v;
        flashImage[off + i] = v;
      }
      persist(off, count);
      stallNs += (PROGRAM_NS_PER_256 * count) / 256;
    } else {
      // A real RP2040 without a debugger takes BKPT as a HardFault and stops there;
      // only the watchdog, if armed, brings it back.
      halted = true;
      event(`halt bkpt 0x${code.toString(16)} at 0x${(mcu.core.PC - 2).toString(16)}`);
      return;
    }
    mcu.core.BXWritePC(mcu.core.LR); // return from the ROM function
  };
  cdc = new USBCDC(mcu.usbCtrl);
  cdc.onDeviceConnected = () => event('connected');
  cdc.onSerialData = (data) => outbox.push(Buffer.from(data));
  const usb = mcu.usbCtrl;
  const stockRead = usb.onEndpointRead;
  pendingRead = 0;
  usb.onEndpointRead = (endpoint, size) => {
    if (endpoint !== cdc.outEndpoint) return stockRead(endpoint, size);
    pendingRead = size;
    feed();
  };
  mcu.core.PC = 0x10000000;
  if (reason) event(`reset ${reason === 2 ? 'force' : 'watchdog'}`);
}

function feed() {
  if (!pendingRead || !inboxBytes) return;
  const n = Math.min(pendingRead, inboxBytes);
  const out = new Uint8Array(n);
  let got = 0;
  while (got < n) {
    const head = inbox[0];
    const take = Math.min(head.length, n - got);
    out.set(head.subarray(0, take), got);
    got += take;
    if (take === head.length) inbox.shift();
    else inbox[0] = head.subarray(take);
  }
  inboxBytes -= n;
  pendingRead = 0;
  mcu.usbCtrl.endpointReadDone(cdc.outEndpoint, out);
}

const readBuf = Buffer.alloc(4096);
function pump() {
  // serial in: non-blocking reads while the board is not too far behind
  while (inboxBytes < 65536) {
    let n;
    try {
      n = readSync(fd, readBuf, 0, readBuf.length, null);
    } catch (e) {
      if (e.code === 'EAGAIN' || e.code === 'EIO') break; // EIO: no one has the port open
      throw e;
    }
    if (!n) break;
    inbox.push(Buffer.from(readBuf.subarray(0, n)));
    inboxBytes += n;
  }
  feed();
  // serial out: what the pty does not take now waits; a host that never reads loses
  // the oldest output rather than stopping the board
  while (outbox.length) {
    let n;
    try {
      n = writeSync(fd, outbox[0]);
    } catch (e) {
      if (e.code === 'EAGAIN' || e.code === 'EIO') break;
      throw e;
    }
    if (n === outbox[0].length) outbox.shift();
    else outbox[0] = outbox[0].subarray(n);
  }
  let queued = outbox.reduce((s, b) => s + b.length, 0);
  while (queued > 1 << 20) queued -= outbox.shift().length;
}

const SLICE_MS = 20;
const wallStart = performance.now();
let boardOffsetNs = 0; // board time (summed over resets) at the current chip's power-on

function run() {
  pump();
  const sliceEnd = performance.now() + SLICE_MS;
  // board time may not pass wall time (+ one slice): an idle board waits for the host
  const limitNs = (performance.now() - wallStart + SLICE_MS) * 1e6 - boardOffsetNs;
  const { core, clock } = mcu;
  let idle = false;
  for (;;) {
    for (let i = 0; i < 20000; i++) {
      if (core.waiting || halted) {
        // sleep to the next alarm, or (none due before it) let board time catch up
        const dt = clock.nanosToNextAlarm;
        if (dt > 0 && clock.nanos + dt <= limitNs) {
          clock.tick(dt);
        } else {
          if (limitNs > clock.nanos) clock.tick(limitNs - clock.nanos);
          idle = true;
          break;
        }
      } else {
        clock.tick(core.executeInstruction() * NS_PER_CYCLE);
        if (stallNs) {
          clock.tick(stallNs);
          stallNs = 0;
        }
      }
      if (resetWhy) break;
    }
    if (resetWhy) {
      boardOffsetNs += clock.nanos;
      boot(resetWhy === 'force' ? 2 : 1);
      break;
    }
    if (idle || performance.now() > sliceEnd) break;
  }
  if (idle) setTimeout(run, 2);
  else setImmediate(run);
}

process.on('SIGTERM', () => {
  try {
    closeSync(fsFile);
  } finally {
    process.exit(0);
  }
});
boot(0);
run();
