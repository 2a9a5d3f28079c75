// The emulated RP2040 (rp2040js) that runs the board image, with its buses
// forwarded to the Python side (tools/rp2emu/chip.py), which owns the chip
// emulators, the pack model and every pty.
//
//   node runner.mjs <rp2040js dir> <bootrom.mjs> <firmware.uf2> [flash image]
//
// Protocol: JSON lines.  The Python side sends commands on stdin; this
// process answers on stdout.  While a "run" command executes, bus events
// that need an answer (I2C address phase, SPI byte, ADC sample) are sent
// as requests and block until the answer line arrives; everything else
// (GPIO edges, UART and USB bytes, resets) is queued and flushed before
// any request and at the end of the slice, so the order is kept.  One clock
// drives both sides: every event carries the emulated time "t" in ns.
//
// What this runner adds to rp2040js 1.3.3 (its README lists the gaps):
//  - the bootrom's flash erase / program routines are patched to BKPT and
//    applied to the flash array here (there is no emulated flash chip),
//    and the core then stalls for as long as the flash chip is busy (see
//    FLASH_TIMING below): no instruction runs, the clock and the
//    peripherals go on, interrupts pend (the rp2 port calls these routines
//    with interrupts disabled);
//  - UART: a real TX FIFO drained at the line rate (start + data + parity +
//    stop bits per character), BUSY / TXFE / TXFF flags and a TX interrupt
//    only on the FIFO crossing its trigger level; received bytes enter the
//    RX FIFO at the line rate, not all at once; the RX interrupt follows
//    the FIFO's trigger level (IFLS) and the receive-timeout interrupt
//    fires after 32 bit periods without a new byte while the FIFO holds
//    data (the PL011's RTINTR: MicroPython's UART.IRQ_RXIDLE);
//  - I2C: each byte takes its 9 bit times on the bus; a NACK abort also
//    flags "TX FIFO empty" so the SDK reports EIO, not a timeout;
//  - SPI: each byte takes its 8 bit times;
//  - USB-CDC: the emulated host holds an OUT poll until it has data;
//  - watchdog and machine.reset(): a fresh chip on the same flash with the
//    watchdog's REASON register set, as on silicon.
import fs from 'node:fs';
import path from 'node:path';
import { pathToFileURL } from 'node:url';

const [rpDir, bootromPath, uf2Path, flashPath] = process.argv.slice(2);
const rp = await import(pathToFileURL(path.join(rpDir, 'dist', 'esm', 'index.js')).href);
const { bootromB1 } = await import(pathToFileURL(bootromPath).href);
const { RP2040, USBCDC, GPIOPinState } = rp;

const FLASH_BASE = 0x10000000;
const NS_PER_CYCLE = 8; // 125 MHz

// ---- the pipe ---------------------------------------------------------------
let outBuf = [];
function send(obj) {
  outBuf.push(JSON.stringify(obj));
}
function flushOut() {
  if (outBuf.length) {
    const data = outBuf.join('\n') + '\n';
    outBuf = [];
    let off = 0;
    const buf = Buffer.from(data);
    while (off < buf.length) {
      try {
        off += fs.writeSync(1, buf, off, buf.length - off);
      } catch (e) {
        if (e.code !== 'EAGAIN') throw e;
      }
    }
  }
}
const inChunk = Buffer.alloc(65536);
let inPending = '';
function readLine() {
  for (;;) {
    const nl = inPending.indexOf('\n');
    if (nl >= 0) {
      const line = inPending.slice(0, nl);
      inPending = inPending.slice(nl + 1);
      return JSON.parse(line);
    }
    let n;
    try {
      n = fs.readSync(0, inChunk, 0, inChunk.length, null);
    } catch (e) {
      if (e.code === 'EAGAIN') continue;
      if (e.code === 'EOF') process.exit(0);
      throw e;
    }
    if (n === 0) process.exit(0);
    inPending += inChunk.toString('latin1', 0, n);
  }
}
function request(obj) {
  send(obj);
  flushOut();
  const w0 = performance.now();
  const r = readLine();
  stats.waitMs += performance.now() - w0;
  return r;
}

// ---- UF2 and flash ----------------------------------------------------------
function loadUF2(flash, data) {
  for (let off = 0; off + 512 <= data.length; off += 512) {
    const v = new DataView(data.buffer, data.byteOffset + off, 512);
    if (v.getUint32(0, true) !== 0x0a324655 || v.getUint32(4, true) !== 0x9e5d5157) continue;
    const addr = v.getUint32(12, true);
    const size = v.getUint32(16, true);
    if (addr >= FLASH_BASE && addr + size <= FLASH_BASE + flash.length) {
      flash.set(data.subarray(off + 32, off + 32 + size), addr - FLASH_BASE);
    }
  }
}
const uf2 = fs.readFileSync(uf2Path);
// The flash survives resets (it is copied into each new chip).
let flashImage = new Uint8Array(16 * 1024 * 1024).fill(0xff);
loadUF2(flashImage, uf2);
if (flashPath && fs.existsSync(flashPath)) {
  // Only the region above the image: a new UF2 replaces the program, as a
  // drag-and-drop flash does, but keeps the filesystem and ROMFS.
  const saved = fs.readFileSync(flashPath);
  const start = saved.readUInt32LE(0);
  flashImage.set(saved.subarray(4), start);
}

// Bootrom function table: (code16, ptr16) pairs at the address in 0x14.
function romFunc(bootrom, c1, c2) {
  const u16 = (a) => (bootrom[a >> 2] >>> ((a & 2) * 8)) & 0xffff;
  let p = u16(0x14);
  const code = c1.charCodeAt(0) | (c2.charCodeAt(0) << 8);
  for (;;) {
    const k = u16(p);
    if (!k) return 0;
    if (k === code) return u16(p + 2);
    p += 4;
  }
}
// Flash busy times, W25Q16JV datasheet (the Pico's flash), section 9.6
// "AC electrical characteristics": sector erase (4 KB, 0x20) tSE 45 ms typ /
// 400 ms max; block erase (64 KB, 0xD8) tBE2 150 ms typ / 2000 ms max; page
// program tPP 0.4 ms typ / 3 ms max.  The bootrom's flash_range_erase uses
// the block command where the range is block-aligned and long enough, else
// sector erases; flash_range_program sends one page (256 B) per program
// command and waits for each.  The command and data bytes themselves go
// out at the SSI clock the bootrom left set (clk_sys / BAUDR).
// RP2EMU_FLASH_TIMING: "typ" (default), "max" (the datasheet worst case),
// or "off" (instant, as rp2040js alone: the old behaviour).
const FLASH_TIMING = {
  typ: { sectorErase: 45e6, blockErase: 150e6, pageProgram: 0.4e6 },
  max: { sectorErase: 400e6, blockErase: 2000e6, pageProgram: 3e6 },
  off: { sectorErase: 0, blockErase: 0, pageProgram: 0 },
}[process.env.RP2EMU_FLASH_TIMING || 'typ'];
if (!FLASH_TIMING) throw new Error(`RP2EMU_FLASH_TIMING=${process.env.RP2EMU_FLASH_TIMING}: typ, max or off`);
let stallNanos = 0; // flash busy time still to pass with the core stopped

function spiNanos(nbytes) {
  const div = (mcu.peripherals[0x18000].baudr & 0xfffe) || 6;
  return FLASH_TIMING.pageProgram ? Math.round((nbytes * 8 * div * 1e9) / 125e6) : 0;
}

function eraseNanos(off, count, blockSize, blockCmd) {
  // The bootrom's loop (flash_range_erase): a block command where aligned.
  let ns = 0;
  while (count > 0) {
    if (blockCmd && blockSize && (off & (blockSize - 1)) === 0 && count >= blockSize) {
      ns += FLASH_TIMING.blockErase + spiNanos(4);
      off += blockSize;
      count -= blockSize;
    } else {
      ns += FLASH_TIMING.sectorErase + spiNanos(4);
      off += 4096;
      count -= 4096;
    }
  }
  return ns;
}

function programNanos(off, count) {
  let ns = 0;
  while (count > 0) {
    const n = Math.min(count, 256 - (off & 255)); // a page program stops at the page end
    ns += FLASH_TIMING.pageProgram + spiNanos(4 + n);
    off += n;
    count -= n;
  }
  return ns;
}

const bootrom = Uint32Array.from(bootromB1);
const BK_ERASE = 0x01, BK_PROGRAM = 0x02;
function patchBkpt(addr, imm) {
  addr &= ~1;
  const word = bootrom[addr >> 2];
  const op = 0xbe00 | imm;
  bootrom[addr >> 2] = addr & 2 ? (word & 0xffff) | (op << 16) : (word & 0xffff0000) | op;
}
patchBkpt(romFunc(bootrom, 'R', 'E'), BK_ERASE);
patchBkpt(romFunc(bootrom, 'R', 'P'), BK_PROGRAM);

// ---- the chip ----------------------------------------------------------------
let mcu = null;
let cdc = null;
let resetPending = null; // reason bits for the next boot
let busyNanos = 0;
let profile = null; // PC -> samples (one per instruction burst) while profiling
let rxEvents = false; // report each byte as it lands in a UART's RX FIFO (timing figures)
let wdtReason = 0;
const stats = { resets: 0, erases: 0, programs: 0, instr: 0, runMs: 0, waitMs: 0, logs: 0,
  flashBusyNs: 0, flashLongestNs: 0 };

const UART_REGS = { DR: 0x0, FR: 0x18, IBRD: 0x24, FBRD: 0x28, LCR_H: 0x2c, CR: 0x30, IFLS: 0x34,
  IMSC: 0x38, RIS: 0x3c, MIS: 0x40, ICR: 0x44 };
const U_TXINTR = 1 << 5, U_RXINTR = 1 << 4, U_RTINTR = 1 << 6;

function uartCharNanos(u) {
  const lcr = u.lineCtrlRegister;
  const bits = 1 + u.wordLength + ((lcr & 2) ? 1 : 0) + ((lcr & 8) ? 2 : 1);
  const baud = u.baudRate || 115200;
  return Math.round((bits * 1e9) / baud);
}

function fixUart(u, index) {
  // A real TX path: FIFO (32 deep, 1 without FEN), shift register, line time.
  const tx = [];
  let shifting = false;
  const rxQueue = [];
  let rxBusy = false;
  // IFLS trigger levels of the 32-deep FIFOs: 1/8, 1/4, 1/2, 3/4, 7/8.
  const level = (sel) => [4, 8, 16, 24, 28][sel] ?? 16;
  const trig = () => (u.fifosEnabled ? level(u.ifls & 7) : 0); // TXIFLSEL
  const rxTrig = () => (u.fifosEnabled ? level((u.ifls >> 3) & 7) : 1); // RXIFLSEL
  u.ifls = 0x12;
  const update = () => {
    mcu.setInterrupt(u.irq, !!(u.interruptStatus & u.interruptMask));
  };
  // Receive timeout: 32 bit periods after the last byte entered the FIFO.
  const bitNanos = () => Math.round(1e9 / (u.baudRate || 115200));
  const rtAlarm = mcu.clock.createAlarm(() => {
    if (!u.rxFIFO.empty) {
      u.interruptStatus |= U_RTINTR;
      update();
    }
  });
  const txAlarm = mcu.clock.createAlarm(() => {
    const b = tx.shift();
    send({ e: 'uart', n: index, b, t: now() });
    if (tx.length <= trig() && tx.length + 1 > trig()) {
      u.interruptStatus |= U_TXINTR;
    }
    if (tx.length) {
      txAlarm.schedule(uartCharNanos(u));
    } else {
      shifting = false;
      u.interruptStatus |= U_TXINTR;
    }
    update();
  });
  const rxAlarm = mcu.clock.createAlarm(() => {
    const b = rxQueue.shift();
    if (!u.rxFIFO.full) u.rxFIFO.push(b);
    if (rxEvents) send({ e: 'uart_in', n: index, b, t: now() });
    if (u.rxFIFO.itemCount >= rxTrig()) u.interruptStatus |= U_RXINTR;
    rtAlarm.schedule(32 * bitNanos()); // (re)starts the count: schedule() cancels first
    update();
    if (rxQueue.length) rxAlarm.schedule(uartCharNanos(u));
    else rxBusy = false;
  });
  u.feedLine = (bytes) => {
    for (const b of bytes) rxQueue.push(b);
    if (!rxBusy && rxQueue.length) {
      rxBusy = true;
      rxAlarm.schedule(uartCharNanos(u));
    }
  };
  Object.defineProperty(u, 'flags', {
    get() {
      const depth = u.fifosEnabled ? 32 : 1;
      return (u.rxFIFO.full ? 1 << 6 : 0) | (u.rxFIFO.empty ? 1 << 4 : 0) |
        (tx.length === 0 ? 1 << 7 : 0) | (tx.length >= depth ? 1 << 5 : 0) |
        (shifting ? 1 << 3 : 0);
    },
  });
  u.checkInterrupts = update;
  const origRead = u.readUint32.bind(u);
  u.readUint32 = (offset) => {
    if (offset === UART_REGS.IFLS) return u.ifls;
    if (offset === UART_REGS.DR) {
      const v = u.rxFIFO.empty ? 0 : u.rxFIFO.pull();
      if (u.rxFIFO.itemCount < rxTrig()) u.interruptStatus &= ~U_RXINTR;
      if (u.rxFIFO.empty) u.interruptStatus &= ~U_RTINTR;
      update();
      return v;
    }
    return origRead(offset);
  };
  const origWrite = u.writeUint32.bind(u);
  u.writeUint32 = (offset, value) => {
    if (offset === UART_REGS.DR) {
      const depth = u.fifosEnabled ? 32 : 1;
      if (tx.length < depth) tx.push(value & 0xff);
      if (tx.length > trig()) u.interruptStatus &= ~U_TXINTR;
      if (!shifting) {
        shifting = true;
        txAlarm.schedule(uartCharNanos(u));
      }
      update();
      return;
    }
    if (offset === UART_REGS.IFLS) {
      u.ifls = value & 0x3f;
      return;
    }
    if (offset === UART_REGS.ICR) {
      u.interruptStatus &= ~value;
      update();
      return;
    }
    if (offset === UART_REGS.IMSC) {
      u.interruptMask = value & 0x7ff;
      update();
      return;
    }
    origWrite(offset, value);
  };
}

function fixI2C(i2c, bus) {
  const bitNanos = () => Math.max(1000, (i2c.sclHighPeriod + i2c.sclLowPeriod + 2) * NS_PER_CYCLE);
  const later = (fn, bits) => {
    const a = mcu.clock.createAlarm(fn);
    a.schedule(bits * bitNanos());
  };
  const origAbort = i2c.abort.bind(i2c);
  i2c.abort = (reason) => {
    origAbort(reason);
    i2c.setInterrupts(1 << 4); // R_TX_EMPTY: the FIFO was flushed
  };
  let addr = 0;
  let wr = [];
  let rd = [];
  i2c.onStart = () => later(() => i2c.completeStart(), 1);
  i2c.onConnect = (address, mode) => {
    addr = address;
    let ack;
    if (mode === 1) {
      const r = request({ e: 'i2c_read', bus, addr, wr, t: now() });
      ack = r.ack;
      rd = r.data || [];
      wr = [];
    } else {
      if (wr.length) flushWrite();
      ack = request({ e: 'i2c_probe', bus, addr, t: now() }).ack;
    }
    later(() => i2c.completeConnect(!!ack), 9);
  };
  const flushWrite = () => {
    send({ e: 'i2c_write', bus, addr, wr, t: now() });
    wr = [];
  };
  i2c.onWriteByte = (value) => {
    wr.push(value);
    later(() => i2c.completeWrite(true), 9);
  };
  i2c.onReadByte = () => {
    const v = rd.length ? rd.shift() : 0xff;
    later(() => i2c.completeRead(v), 9);
  };
  i2c.onStop = () => {
    if (wr.length) flushWrite();
    rd = [];
    later(() => i2c.completeStop(), 1);
  };
}

// Inputs a reply carries (a chip's output that changed during the exchange).
function applyInputs(list) {
  if (!list) return;
  for (const [pin, v] of list) {
    gpioIn.set(pin, !!v);
    mcu.gpio[pin].setInputValue(!!v);
  }
}

function fixSPI(spi, bus) {
  spi.onTransmit = (value) => {
    const r = request({ e: 'spi', bus, b: value, t: now() });
    applyInputs(r.gpio);
    const hz = spi.clockFrequency || 1e6;
    const a = mcu.clock.createAlarm(() => spi.completeTransmit(r.b & 0xff));
    a.schedule(Math.round((8 * 1e9) / hz));
  };
}

function fixADC(adc) {
  adc.onADCRead = (channel) => {
    const r = request({ e: 'adc', ch: channel, t: now() });
    const a = mcu.clock.createAlarm(() => adc.completeADCRead(r.v & 0xfff, false));
    a.schedule(adc.sampleTime * 1000);
  };
}

function fixCDC(c) {
  // The host's side of the OUT endpoint: an unbounded queue answered only
  // when the device asks (USB's own flow control), so nothing a host sends
  // is dropped, as on a real USB link (rp2040js keeps a 512-byte FIFO that
  // drops on overflow).  An OUT poll with nothing queued is held.
  let pending = null;
  const queue = [];
  let head = 0;
  c.usb.onEndpointRead = (endpoint, size) => {
    if (endpoint !== c.outEndpoint) return;
    if (head >= queue.length) {
      pending = size;
      return;
    }
    answer(size);
  };
  const answer = (size) => {
    const n = Math.min(size, queue.length - head);
    const buffer = new Uint8Array(queue.slice(head, head + n));
    head += n;
    if (head >= queue.length) {
      queue.length = 0;
      head = 0;
    }
    c.usb.endpointReadDone(c.outEndpoint, buffer);
  };
  c.feed = (bytes) => {
    for (const b of bytes) queue.push(b);
    if (pending !== null && head < queue.length) {
      const size = pending;
      pending = null;
      answer(size);
    }
  };
}

const gpioIn = new Map(); // pin -> level driven from outside (kept over resets)
const syncPins = new Set(); // output pins whose edges wait for the Python side's answer

function boot(reason) {
  mcu = new RP2040();
  mcu.logger = { debug() { stats.logs++; }, info() { stats.logs++; }, warn() { stats.logs++; }, error(tag, msg) { send({ e: 'log', msg: `${tag}: ${msg}` }); } };
  mcu.loadBootrom(bootrom);
  // MicroPython 1.27 (pico-sdk 2.x) runs clk_peri from the 48 MHz USB PLL
  // (CLK_PERI_CTRL reads 0x840 on the emulated chip): UART and SPI divisors
  // are computed for 48 MHz.  rp2040js assumes 125 MHz, which made every
  // UART line and SPI clock 2.6x too fast (9600 baud ran at 25000).
  mcu.clkPeri = 48000000;
  mcu.flash.set(flashImage.subarray(0, mcu.flash.length));
  flashImage = mcu.flash; // the chip's own array from now on
  const wdt = mcu.peripherals[0x40058];
  wdt.reason = reason;
  wdt.onWatchdogTrigger = () => {
    resetPending = wdt.reason || 1;
    // rp2040js re-arms its periodic alarm at counter 0, which is "now":
    // left enabled it fires forever inside one clock.tick().  The chip is
    // resetting anyway, so the watchdog stops here.
    wdt.alarm.enable = false;
    wdt.timer.enable = false;
  };
  mcu.onBreak = (code) => {
    const core = mcu.core;
    const r = core.registers;
    if (code === BK_ERASE) {
      const off = r[0] >>> 0, count = r[1] >>> 0;
      mcu.flash.fill(0xff, off, off + count);
      stats.erases += 1;
      stall(eraseNanos(off, count, r[2] >>> 0, r[3] & 0xff));
    } else if (code === BK_PROGRAM) {
      const off = r[0] >>> 0, src = r[1] >>> 0, count = r[2] >>> 0;
      const data = mcu.sram.subarray(src - 0x20000000, src - 0x20000000 + count);
      for (let i = 0; i < count; i++) mcu.flash[off + i] &= data[i]; // NOR: program clears bits
      stats.programs += 1;
      stall(programNanos(off, count));
    } else {
      send({ e: 'log', msg: `breakpoint ${code} at ${core.PC.toString(16)}` });
      resetPending = -1; // a hard stop: report and reboot
      return;
    }
    core.PC = core.LR & ~1;
  };
  mcu.uart.forEach((u, i) => fixUart(u, i));
  mcu.i2c.forEach((b, i) => fixI2C(b, i));
  mcu.spi.forEach((s, i) => fixSPI(s, i));
  fixADC(mcu.adc);
  cdc = new USBCDC(mcu.usbCtrl);
  fixCDC(cdc);
  cdc.onSerialData = (buf) => send({ e: 'cdc', d: Array.from(buf), t: now() });
  cdc.onDeviceConnected = () => send({ e: 'cdc_up', t: now() });
  mcu.gpio.forEach((pin, i) => {
    pin.addListener((state) => {
      const v = state === GPIOPinState.High ? 1 : state === GPIOPinState.Low ? 0 : -1;
      if (syncPins.has(i)) {
        // An edge a chip answers at once (the MCP2515's CS: the read that
        // empties its buffers raises INT when CS goes high).
        applyInputs(request({ e: 'gpio_sync', pin: i, v, t: now() }).gpio);
      } else {
        send({ e: 'gpio', pin: i, v, t: now() });
      }
    });
    if (gpioIn.has(i)) pin.setInputValue(gpioIn.get(i));
  });
  mcu.core.PC = 0x10000000; // boot2 at the start of flash, as the bootrom does
}

function stall(ns) {
  stallNanos += ns;
  stats.flashBusyNs += ns;
  if (ns > stats.flashLongestNs) stats.flashLongestNs = ns;
}

// Time continues over resets, as the Python side's clock does.
let timeBase = 0;
function now() {
  return timeBase + mcu.clock.nanos;
}

function doReset(reason) {
  timeBase += mcu.clock.nanos;
  stallNanos = 0; // a reset (or a power cut) ends whatever the flash was doing
  stats.resets += 1;
  send({ e: 'reset', reason, t: timeBase });
  boot(reason > 0 ? reason : 0);
}

function run(until) {
  while (now() < until) {
    const core = mcu.core; // a new chip after each reset
    if (resetPending !== null) {
      const r = resetPending;
      resetPending = null;
      doReset(r);
      continue;
    }
    const clock = mcu.clock;
    if (core.waiting) {
      const target = until - timeBase;
      const next = clock.nextAlarm ? clock.nextAlarm.nanos : target;
      clock.tick(Math.max(0, Math.min(next, target) - clock.nanos));
      if (!clock.nextAlarm && clock.nanos >= target) break;
    } else {
      // A burst of instructions between checks keeps the loop cheap.
      const stop = Math.min(until - timeBase, clock.nanos + 20000);
      const start = clock.nanos;
      if (stallNanos > 0) {
        // The core waits on the flash: time passes, alarms fire, no instruction runs.
        const d = Math.min(stallNanos, stop - clock.nanos);
        clock.tick(d);
        stallNanos -= d;
        busyNanos += d;
        continue;
      }
      while (!core.waiting && clock.nanos < stop && resetPending === null && stallNanos === 0) {
        const cycles = core.executeInstruction();
        clock.tick(cycles * NS_PER_CYCLE);
        stats.instr++;
      }
      if (profile !== null && !core.waiting) {
        const pc = core.PC >>> 0;
        profile.set(pc, (profile.get(pc) || 0) + 1);
      }
      busyNanos += clock.nanos - start;
    }
  }
}

boot(0);
send({ e: 'hello', t: 0, flash_size: 2 * 1024 * 1024 });
flushOut();

for (;;) {
  const cmd = readLine();
  switch (cmd.c) {
    case 'run': {
      const w0 = performance.now();
      run(cmd.until);
      stats.runMs += performance.now() - w0;
      send({ e: 'done', t: now(), busy: busyNanos, stats });
      break;
    }
    case 'uart_rx':
      mcu.uart[cmd.n].feedLine(cmd.d);
      break;
    case 'cdc_rx':
      cdc.feed(cmd.d);
      break;
    case 'sync_pins':
      for (const p of cmd.pins) syncPins.add(p);
      break;
    case 'gpio_in':
      gpioIn.set(cmd.pin, !!cmd.v);
      mcu.gpio[cmd.pin].setInputValue(!!cmd.v);
      break;
    case 'reset':
      // Power cycle (reason 0) keeps the flash and forgets everything else.
      doReset(cmd.reason || 0);
      break;
    case 'flash_save': {
      const start = cmd.start;
      const end = cmd.end;
      const out = Buffer.alloc(4 + end - start);
      out.writeUInt32LE(start, 0);
      Buffer.from(mcu.flash.buffer, mcu.flash.byteOffset + start, end - start).copy(out, 4);
      fs.writeFileSync(cmd.path + '.tmp', out);
      fs.renameSync(cmd.path + '.tmp', cmd.path);
      send({ e: 'saved', t: now() });
      break;
    }
    case 'rx_events':
      rxEvents = !!cmd.on;
      break;
    case 'profile':
      if (cmd.on) {
        profile = new Map();
      } else if (profile !== null) {
        send({ e: 'profile', pcs: Array.from(profile.entries()), t: now() });
        profile = null;
      }
      break;
    case 'dbg':
      send({ e: 'log', msg: JSON.stringify({ pc: mcu.core.PC.toString(16), waiting: mcu.core.waiting,
        nanos: mcu.clock.nanos, next: mcu.clock.nextAlarm ? mcu.clock.nextAlarm.nanos : null,
        timeBase, primask: mcu.core.PM, lr: mcu.core.LR.toString(16),
        stack: Array.from({ length: 48 }, (_, i) => mcu.readUint32(mcu.core.SP + 4 * i).toString(16)) }) });
      break;
    case 'quit':
      flushOut();
      process.exit(0);
      break;
    default:
      send({ e: 'log', msg: `unknown command ${cmd.c}` });
      send({ e: 'done', t: now(), busy: busyNanos, stats });
  }
  flushOut();
}
