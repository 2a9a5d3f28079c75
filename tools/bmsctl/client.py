"""bmsctl's Modbus side: pymodbus over pyserial, decoded with the firmware's own map.

Every name, unit, address and scale comes from ``comms.registers`` and
``bms.params`` (imported from firmware/), so the PC tool cannot drift from
the device.
"""
import re

import tools  # noqa: F401  (firmware on sys.path)
from bms import faults as F
from bms.contactors import RELAY_NAMES
from bms.core import CMD_NAMES, CMD_REASONS, CMD_STATUS_NAMES, MODE_NAMES
from bms.eventlog import KIND_NAMES
from bms.measurements import ROLE_NAMES
from bms.params import CHEM_NAMES, N_PARAMS, P_CHEMISTRY
from bms.params import TABLE as PARAM_TABLE
from bms.params import index as param_index
from comms import registers as R
from comms.regs import auth as RA
from comms.regs import balance as RBL
from comms.regs import battery as RB
from comms.regs import cells as RC
from comms.regs import names as RN
from comms.regs import status as RS
from comms.regs import clock as RCK
from comms.regs import cmd_result as RCR
from comms.regs import lease as RLS
from comms.regs import identity as RI
from comms.regs import log as RL
from comms.regs import log_head as RLH
from comms.regs import modules as RMOD
from comms.regs import monitor as RM
from comms.regs import temps as RT

EXC_NAMES = {1: "illegal function", 2: "illegal data address", 3: "illegal data value",
             4: "server device failure", 6: "server device busy"}


class BmsError(Exception):
    """A refusal from the BMS or a link failure, with a readable reason."""

    def __init__(self, msg, code=None, index=None):
        Exception.__init__(self, msg)
        self.code = code
        self.index = index


# ---- units ---------------------------------------------------------------
_UNIT_RE = re.compile(r"^([0-9.eE+-]+)?\s*([A-Za-z%]*)$")
_CONV = {("V", "mV"): 1000.0, ("mV", "V"): 0.001, ("A", "mA"): 1000.0, ("mA", "A"): 0.001,
         ("Ah", "mAh"): 1000.0, ("mAh", "Ah"): 0.001, ("s", "ms"): 1000.0, ("ms", "s"): 0.001}


def unit_scale(unit):
    """'0.1A' -> (0.1, 'A'); '1e-4' -> (0.0001, ''); 'mV' -> (1, 'mV'); enum/bool -> (1, '')."""
    if unit in ("enum", "bool", "addr", "cells"):
        return 1, "" if unit != "cells" else "cells"
    m = _UNIT_RE.match(unit)
    if not m:
        return 1, unit
    num, base = m.group(1), m.group(2)
    if num:
        try:
            return float(num), base
        except ValueError:
            return 1, unit
    return 1, base


def param_display(i, raw):
    scale, base = unit_scale(PARAM_TABLE[i][1])
    if scale == 1:
        return raw, base
    v = raw * scale
    return round(v, 6), base


def param_parse(i, text):
    """'3.65V', '3650', '100A', 'LFP', 'on' -> raw table value; ValueError with a reason."""
    name, unit = PARAM_TABLE[i][0], PARAM_TABLE[i][1]
    t = text.strip()
    if i == P_CHEMISTRY and t.upper() in CHEM_NAMES:
        return CHEM_NAMES.index(t.upper())
    if unit == "bool" and t.lower() in ("on", "off", "true", "false", "yes", "no"):
        return 1 if t.lower() in ("on", "true", "yes") else 0
    if unit == "enum":
        from tools.bmsctl.paramview import enum_value
        ev = enum_value(i, t)
        if ev is not None:
            return ev
    m = re.match(r"^([-+]?[0-9]*\.?[0-9]+(?:[eE][-+]?[0-9]+)?)\s*([A-Za-z%]*)$", t)
    if not m:
        raise ValueError("%s: cannot read %r as a number" % (name, text))
    v = float(m.group(1))
    given = m.group(2)
    scale, base = unit_scale(unit)
    if given and given != base:
        k = _CONV.get((given, base))
        if k is None:
            raise ValueError("%s is in %s, not %s" % (name, base or "plain numbers", given))
        v *= k
    raw = v / scale
    r = int(round(raw))
    if abs(raw - r) > 1e-6 * max(1.0, abs(raw)):
        raise ValueError("%s: %s is not a multiple of %g %s" % (name, text, scale, base))
    return r


# ---- decoding ------------------------------------------------------------
def _s16(v):
    return v - 0x10000 if v & 0x8000 else v


def ascii_of(regs):
    b = bytearray()
    for v in regs:
        b += bytes((v >> 8, v & 0xFF))
    return bytes(b).split(b"\0", 1)[0].decode("ascii", "replace")


def _value(regs, o, typ):
    """The register value at ``o`` of type ``typ`` (16 or 32 bit, signed or not)."""
    if typ in ("u32", "s32"):
        v = (regs[o] << 16) | regs[o + 1]
        if typ == "s32" and v & 0x80000000:
            v -= 1 << 32
        return v
    v = regs[o]
    return _s16(v) if typ == "s16" else v


def decode_monitor(regs):
    offs = RM.offsets()
    return {row[0]: _value(regs, offs[i], row[1]) for i, row in enumerate(RM.MONITOR)}


def fault_names(words):
    """Fault names from bit words (bit b of word k = fault id 16k+b)."""
    out = []
    for k, w in enumerate(words):
        for b in range(16):
            fid = 16 * k + b
            if w & (1 << b) and fid < F.N_FAULTS:
                out.append(F.TABLE[fid][F.F_NAME])
    return out


def relay_names(bits):
    return [RELAY_NAMES[i] for i in range(len(RELAY_NAMES)) if bits & (1 << i)]


def name_of(seq, i):
    return seq[i] if 0 <= i < len(seq) else str(i)


class BmsClient:
    def __init__(self, port, baud=9600, address=1, timeout=1.0, retries=2, client=None):
        if client is None:
            from pymodbus.client import ModbusSerialClient
            client = ModbusSerialClient(port, baudrate=baud, timeout=timeout, retries=retries)
        self.mb = client
        self.address = address
        self.port = port

    def connect(self):
        if not self.mb.connect():
            raise BmsError("cannot open %s" % self.port)
        return self

    def close(self):
        self.mb.close()

    # ---- raw access ------------------------------------------------------
    def _check(self, r, what):
        from pymodbus.pdu import ExceptionResponse
        if r is None:
            raise BmsError("%s: no answer" % what)
        if isinstance(r, ExceptionResponse) or r.isError():
            code = getattr(r, "exception_code", None)
            raise BmsError("%s: exception %s (%s)" % (what, code, EXC_NAMES.get(code, "?")), code)
        return r

    def read(self, addr, count, fc=3):
        out = []
        while count > 0:
            n = min(125, count)
            try:
                if fc == 4:
                    r = self.mb.read_input_registers(addr, count=n, device_id=self.address)
                else:
                    r = self.mb.read_holding_registers(addr, count=n, device_id=self.address)
            except Exception as e:  # noqa: BLE001 - pymodbus raises on timeouts
                raise BmsError("read 0x%04X: %s" % (addr, e))
            out += self._check(r, "read 0x%04X" % addr).registers
            addr += n
            count -= n
        return out

    def write(self, addr, values):
        try:
            if len(values) == 1:
                r = self.mb.write_register(addr, values[0] & 0xFFFF, device_id=self.address)
            else:
                r = self.mb.write_registers(addr, [v & 0xFFFF for v in values],
                                            device_id=self.address)
        except Exception as e:  # noqa: BLE001
            raise BmsError("write 0x%04X: %s" % (addr, e))
        try:
            return self._check(r, "write 0x%04X" % addr)
        except BmsError as e:
            raise self._explain(e)

    def _explain(self, e):
        """Turn an exception code into the device's own reason (last-error registers)."""
        try:
            regs = self.read(R.A_AUTH + RA.AU_ERR_INDEX, 2 + RA.ERR_TEXT_LEN // 2)
        except BmsError:
            return e
        idx = _s16(regs[0])
        text = ascii_of(regs[2:])
        if e.code == 1 and not text:
            text = "locked: unlock with the password first"
        return BmsError("refused: %s" % (text or str(e)), e.code, idx if idx >= 0 else None)

    # ---- views -----------------------------------------------------------
    def info(self):
        regs = self.read(R.A_INFO, RI.SIZE)
        out = {}
        for name, off, n, typ, _w, _d in RI.INFO:
            out[name] = ascii_of(regs[off:off + n]) if typ == "ascii" else regs[off]
        return out

    def monitor(self):
        return decode_monitor(self.read(R.A_MON, RM.SIZE))

    def cells(self, n=None):
        if n is None:
            n = self.read(R.monitor_address("cell_count"), 1)[0]
        return self.read(R.A_CELLS, n, fc=4)

    def temps(self):
        regs = self.read(R.A_TEMPS, RT.SIZE)
        # A master with slave modules has more sensors than the block's 16
        # slots; the rest are in the modules block.
        n = min(regs[RT.T_COUNT], RT.MAX_TEMPS)
        return [{"index": i, "role": name_of(ROLE_NAMES, regs[RT.T_ROLE + i]),
                 "temp_c": _s16(regs[RT.T_VALUE + i]) / 10.0,
                 "status": name_of(RT.T_STATUS_NAMES, regs[RT.T_STATUS + i])} for i in range(n)]

    def params(self):
        regs = self.read(R.A_PARAMS, N_PARAMS)
        out = []
        for i, row in enumerate(PARAM_TABLE):
            raw = _s16(regs[i]) if row[2] < 0 else regs[i]
            v, base = param_display(i, raw)
            out.append({"index": i, "name": row[0], "raw": raw, "value": v, "unit": base,
                        "table_unit": row[1], "min": row[2], "max": row[3], "text": row[6]})
        return out

    def set_params(self, changes):
        """Apply {index: raw} in as few requests as possible, each all-or-nothing.

        A chemistry change goes first on its own (it loads that chemistry's
        defaults); every other change is one FC16 over the span of indices,
        re-writing the unchanged values in between, so the device validates
        the whole combination at once.
        """
        changes = dict(changes)
        for i, v in changes.items():
            # A register holds 16 bits: a value out of the row's range must
            # not reach the BMS as its low 16 bits (which may be in range).
            lo, hi = PARAM_TABLE[i][2], PARAM_TABLE[i][3]
            if not lo <= v <= hi:
                raise BmsError("refused, nothing written: %s = %s out of range %s..%s"
                               % (PARAM_TABLE[i][0], param_value_text(i, v),
                                  param_value_text(i, lo), param_value_text(i, hi)), 3, i)
        if P_CHEMISTRY in changes:
            self.write(R.A_PARAMS + P_CHEMISTRY, [changes.pop(P_CHEMISTRY)])
        if not changes:
            return
        lo, hi = min(changes), max(changes)
        cur = self.read(R.A_PARAMS + lo, hi - lo + 1)
        vals = []
        for k in range(lo, hi + 1):
            vals.append(changes[k] if k in changes else
                        (_s16(cur[k - lo]) if PARAM_TABLE[k][2] < 0 else cur[k - lo]))
        self.write(R.A_PARAMS + lo, vals)

    def follow(self, values):
        """Talk on the address / baud rate that ``values`` ({index: raw}) just
        gave the BMS: it answers that write on the old ones, then uses these."""
        from bms.params import BAUD_RATES, P_MODBUS_ADDR, P_MODBUS_BAUD
        if P_MODBUS_ADDR in values:
            self.address = values[P_MODBUS_ADDR]
        if P_MODBUS_BAUD in values:
            baud = BAUD_RATES[values[P_MODBUS_BAUD]]
            cp = getattr(self.mb, "comm_params", None)
            if cp is not None and getattr(cp, "baudrate", baud) != baud:
                cp.baudrate = baud
                ser = getattr(self.mb, "socket", None)
                if ser is not None:
                    ser.baudrate = baud

    def command_result(self):
        regs = self.read(R.A_CMD_RESULT, RCR.SIZE)
        st = regs[RCR.R_STATUS]
        return {"seq": regs[RCR.R_SEQ], "cmd": name_of(CMD_NAMES, regs[RCR.R_CMD]),
                "status": name_of(CMD_STATUS_NAMES, st), "reason_code": regs[RCR.R_REASON],
                "reason": name_of(CMD_REASONS, regs[RCR.R_REASON]),
                "value": _value(regs, RCR.R_VALUE, "s32")}

    def command(self, name, arg=1, wait=True, timeout_s=5.0):
        """Send command ``name`` and, with ``wait``, read back what the core did
        with it: the result dict when done, BmsError (code 3) when refused.

        A write only queues the command (the core runs it at its next 50 ms
        cycle and may refuse it there), so the answer to the write alone
        would claim success for a command that never happened."""
        import time as _time
        seq0 = self.read(R.A_CMD_RESULT + RCR.R_SEQ, 1)[0] if wait else 0
        addr = R.command_address(name)
        if -32768 <= arg <= 32767:
            self.write(addr, [arg & 0xFFFF])
        else:
            self.write(addr, [(arg >> 16) & 0xFFFF, arg & 0xFFFF])
        if not wait:
            return None
        end = _time.monotonic() + timeout_s
        while True:
            res = self.command_result()
            if res["seq"] != seq0 and res["status"] in ("done", "refused"):
                break
            if _time.monotonic() > end:
                raise BmsError("%s: sent, but the BMS has not run it (status %s)"
                               % (name, res["status"]), 4)
            _time.sleep(0.02)
        if res["cmd"] != name:
            raise BmsError("%s: result overwritten by another client's %s: check the state"
                           % (name, res["cmd"]), 6)
        if res["status"] == "refused":
            raise BmsError("refused: %s: %s" % (name, res["reason"] or "no reason given"), 3)
        return res

    # ---- battery data, balancing, names ------------------------------------
    def battery(self):
        regs = self.read(R.A_BATTERY, RB.SIZE)
        return {name: _value(regs, o, typ) for name, o, _n, typ, _u, _d in RB.FIELDS}

    def limits(self):
        """CCL / DCL (0.1 A) and CVL / DVL (0.1 V) from the status block."""
        regs = self.read(R.A_STATUS, RS.SIZE)
        out = {}
        a = 0
        for name, typ, _u, _d, _s in RS.STATUS:
            out[name] = _value(regs, a, typ)
            a += 2 if typ in ("u32", "s32") else 1
        return out

    def balance(self, n_cells):
        regs = self.read(R.A_BALANCE, RBL.BL_CELLS + n_cells)
        from bms.balancing import STATE_NAMES
        return {"state": name_of(STATE_NAMES, regs[RBL.BL_STATE]),
                "current_ma": regs[RBL.BL_CURRENT],
                "cell_mah": regs[RBL.BL_CELLS:RBL.BL_CELLS + n_cells]}

    def names(self):
        regs = self.read(R.A_NAMES, RN.SIZE)
        out = {}
        for name, o, n, typ, _w, _d in RN.FIELDS:
            out[name] = ascii_of(regs[o:o + n]) if typ == "ascii" else regs[o]
        return out

    def set_name(self, name, value):
        """Write one names-block field: text, or a raw u16."""
        for fname, o, n, typ, _w, _d in RN.FIELDS:
            if fname == name:
                if typ == "ascii":
                    b = value.encode("ascii") if isinstance(value, str) else bytes(value)
                    if len(b) > 2 * n:
                        raise BmsError("%s: at most %d characters" % (name, 2 * n), 3)
                    self.write(R.A_NAMES + o, _ascii_regs(b, n))
                else:
                    self.write(R.A_NAMES + o, [int(value)])
                return
        raise KeyError(name)

    # ---- clock and lease -------------------------------------------------
    def clock(self):
        """Unix seconds of the BMS clock (0: not set since boot)."""
        regs = self.read(R.A_CLOCK, RCK.SIZE)
        return (regs[RCK.C_TIME] << 16) | regs[RCK.C_TIME + 1]

    def set_clock(self, unix_s):
        unix_s = int(unix_s)
        self.write(R.A_CLOCK + RCK.C_TIME, [(unix_s >> 16) & 0xFFFF, unix_s & 0xFFFF])

    def lease(self):
        regs = self.read(R.A_LEASE, RLS.SIZE)
        rem = (regs[RLS.L_REMAIN] << 16) | regs[RLS.L_REMAIN + 1]
        return {"state": name_of(RLS.STATE_NAMES, regs[RLS.L_STATE]),
                "remaining_s": None if rem == 0xFFFFFFFF else rem,
                "counter": regs[RLS.L_COUNTER], "retry_s": regs[RLS.L_RETRY],
                "days": regs[RLS.L_DAYS]}

    def enter_lease(self, code):
        self.write(R.A_LEASE + RLS.L_CODE, _ascii_regs(code.strip(), RLS.L_CODE_REGS))

    def unlock(self, password):
        """Challenge-response: the password never crosses the link.

        Asks for a fresh nonce, derives each stored record's digest from the
        password with the salt and iterations the BMS sent, and answers
        HMAC-SHA256(digest, nonce) for the factory and the user record."""
        from bms.auth import MAC_LEN, NONCE_LEN, client_digest, hmac_sha256
        pw = password.encode() if isinstance(password, str) else bytes(password)
        self.write(R.A_AUTH + RA.AU_CHAL_REQ, [1])
        regs = self.read(R.A_AUTH + RA.AU_CHALLENGE, RA.CHAL_REGS)
        raw = b"".join(bytes(((v >> 8) & 0xFF, v & 0xFF)) for v in regs)
        nonce = raw[:NONCE_LEN]
        macs = b""
        pos = NONCE_LEN
        for _record in ("factory", "user"):
            salt = raw[pos:pos + 8]
            it = (raw[pos + 8] << 8) | raw[pos + 9]
            pos += 10
            macs += hmac_sha256(client_digest(pw, salt, it), nonce) if it else bytes(MAC_LEN)
        self.write(R.A_AUTH + RA.AU_RESPONSE,
                   [(macs[2 * k] << 8) | macs[2 * k + 1] for k in range(len(macs) // 2)])

    def lock(self):
        self.write(R.A_AUTH + RA.AU_LOCK, [1])

    def passwd(self, new, factory=False):
        self.write(R.A_AUTH + (RA.AU_NEW_FACTORY if factory else RA.AU_NEW_USER),
                   _ascii_regs(new, RA.PW_REGS))

    def auth_state(self):
        regs = self.read(R.A_AUTH + RA.AU_ROLE, 3)
        from bms.auth import ROLE_NAMES as AR
        return {"role": name_of(AR, regs[0]), "lockout_s": regs[1], "failures": regs[2]}

    def log(self):
        head = self.read(R.A_LOGHEAD, RLH.SIZE)
        n = head[RLH.LH_COUNT]
        regs = self.read(R.A_LOG, n * RL.REC_REGS) if n else []
        walls = self.read(R.A_LOG_WALL, 2 * n) if n else []
        out = []
        for i in range(n):
            base = i * RL.REC_REGS
            v = {f[0]: _value(regs, base + f[1], f[2]) for f in RL.LOG_FIELDS}
            e = {"seq": v["seq"], "time_ms": v["time"], "kind": name_of(KIND_NAMES, v["kind"]),
                 "a": v["a"], "b": v["b"],
                 "wall": (walls[2 * i] << 16) | walls[2 * i + 1]}
            e["time"] = event_time(e["wall"], e["time_ms"])
            e["text"] = describe_event(e["kind"], v["a"], v["b"])
            out.append(e)
        return out

    def modules(self):
        """Modules block: (header, [module, ...]); header module_count 0 on a single board."""
        return read_modules(self)

    def dump(self):
        """Every register of every block: list of dicts (block, address, name, raw)."""
        rows = []
        names = register_names()
        for name, start, size, _d, _m in R.BLOCKS:
            if size is None:
                size = self.read(R.A_LOGHEAD + RLH.LH_CAPACITY, 1)[0] * RL.REC_REGS
            elif name == "log_wall":   # only the records kept (the block is sized for 1600)
                size = 2 * self.read(R.A_LOGHEAD + RLH.LH_COUNT, 1)[0]
                if not size:
                    continue
            if name == "commands":
                continue  # write-only
            regs = self.read(start, size)
            for k, v in enumerate(regs):
                rows.append({"block": name, "address": start + k,
                             "name": names.get(start + k, ""), "raw": v})
        return rows


def _ascii_regs(s, n):
    b = s.encode() if isinstance(s, str) else bytes(s)
    if len(b) > 2 * n:
        raise BmsError("text longer than %d characters" % (2 * n), 3)
    b = b + b"\0" * (2 * n - len(b))
    return [(b[2 * i] << 8) | b[2 * i + 1] for i in range(n)]


def event_time(wall, ticks_ms):
    """ISO 8601 UTC time of an event stamped with the BMS clock; else its
    time since boot (the clock had not been set), never raw ticks."""
    import datetime
    if wall:
        return datetime.datetime.fromtimestamp(wall, datetime.timezone.utc) \
            .strftime("%Y-%m-%dT%H:%M:%SZ")
    s, ms = divmod(ticks_ms, 1000)
    h, s = divmod(s, 3600)
    m, s = divmod(s, 60)
    return "boot+%d:%02d:%02d.%03d" % (h, m, s, ms)


# Units of each fault signal (bms.faults SIG_*) for the log: (scale, unit).
_SIG_UNITS = {F.SIG_CELL_MAX: (0.001, "V"), F.SIG_CELL_MIN: (0.001, "V"),
              F.SIG_CELL_DIFF: (1, "mV"), F.SIG_CHG_I: (0.001, "A"), F.SIG_DSG_I: (0.001, "A"),
              F.SIG_T_POWER: (0.1, "degC"), F.SIG_T_BAL: (0.1, "degC"),
              F.SIG_T_CELL_MAX: (0.1, "degC"), F.SIG_T_CELL_MIN: (0.1, "degC")}


def _scaled(v, scale, unit):
    if scale == 1:
        return "%d %s" % (v, unit)
    digits = {0.001: 3, 0.1: 1, 0.01: 2}.get(scale, 3)
    return "%.*f %s" % (digits, v * scale, unit)


def fault_value(fid, v):
    """A fault event's value in its signal's unit ("3.652 V", "45.3 degC", "set")."""
    if not 0 <= fid < F.N_FAULTS:
        return str(v)
    u = _SIG_UNITS.get(F.TABLE[fid][F.F_SIGNAL])
    if u is None:
        return "flag" if v else "clear"
    return _scaled(v, u[0], u[1])


def param_text(i, raw):
    """'ov1 = 3.65 V', 'chemistry = LFP', 'buzzer = on'."""
    if not 0 <= i < len(PARAM_TABLE):
        return "parameter %d = %d" % (i, raw)
    return "%s = %s" % (PARAM_TABLE[i][0], param_value_text(i, raw))


def param_value_text(i, raw):
    from tools.bmsctl.paramview import enum_name
    e = enum_name(i, raw)
    if e is not None:
        return e
    v, base = param_display(i, raw)
    return ("%s %s" % (v, base)).strip()


def _may_be_negative(fid):
    """Whether fault ``fid``'s signal can read below 0 (the temperatures)."""
    if not 0 <= fid < F.N_FAULTS:
        return True
    return F.TABLE[fid][F.F_SIGNAL] in (F.SIG_T_POWER, F.SIG_T_BAL, F.SIG_T_CELL_MAX,
                                        F.SIG_T_CELL_MIN)


def describe_event(kind, a, b):
    if kind == "fault_set" and b == -1 and not _may_be_negative(a):
        # bms.protection.restore: a latch kept over a restart, no measurement
        # (a temperature of -0.1 degC is a real -1: those stay values).
        return "%s (restored from flash)" % name_of([r[0] for r in F.TABLE], a)
    if kind in ("fault_set", "fault_clear", "fault_recovery"):
        return "%s (%s)" % (name_of([r[0] for r in F.TABLE], a), fault_value(a, b))
    if kind == "relay":
        return "%s %s" % (name_of(RELAY_NAMES, a), "closed" if b else "open")
    if kind == "param":
        return param_text(a, b)
    if kind == "command":
        return "%s %d" % (name_of(CMD_NAMES, a), b)
    if kind == "dsg_state":
        from bms.contactors import D_NAMES
        return "discharge path %s" % name_of(D_NAMES, a)
    if kind == "soc_cal":
        return "SOC calibrated to %.1f %%" % (a / 10.0)
    if kind == "calibration":
        what = name_of(CMD_NAMES, a)
        if b == -1:
            return "%s refused" % what
        if what == "cal_current":
            return "current gain now %.4f" % (b / 10000.0)
        return "current offset now %d mA" % b
    if kind == "exception":
        return "firmware exception #%d (relays opened, internal fault latched)" % a
    if kind == "clock":
        from bms.wallclock import EPOCH_2020
        return "%s %s" % ("clock set to" if b == 0 else "daily time mark",
                          event_time(a + EPOCH_2020, 0))
    if kind in ("boot", "log_cleared"):
        return ""
    return "%d %d" % (a, b)


def register_names():
    """Address -> register name, for every named register of the map."""
    names = {}
    for name, off, n, _t, _w, _d in RI.INFO:
        for k in range(n):
            names[R.A_INFO + off + k] = name if n == 1 else "%s[%d]" % (name, k)
    for row, o in zip(RM.MONITOR, RM.offsets()):
        if row[1] in ("u32", "s32"):
            names[R.A_MON + o] = row[0] + ".hi"
            names[R.A_MON + o + 1] = row[0] + ".lo"
        else:
            names[R.A_MON + o] = row[0]
    names[R.A_TEMPS + RT.T_COUNT] = "temp_count"
    for i in range(RT.MAX_TEMPS):
        names[R.A_TEMPS + RT.T_VALUE + i] = "temp%d" % (i + 1)
        names[R.A_TEMPS + RT.T_STATUS + i] = "temp%d_status" % (i + 1)
        names[R.A_TEMPS + RT.T_ROLE + i] = "temp%d_role" % (i + 1)
    for i in range(RC.MAX_CELLS):
        names[R.A_CELLS + i] = "cell%d" % (i + 1)
    for i, row in enumerate(PARAM_TABLE):
        names[R.A_PARAMS + i] = row[0]
    for c in range(1, len(CMD_NAMES)):
        names[R.command_address(CMD_NAMES[c])] = CMD_NAMES[c]
    for name, off, n, _t, _rw, _d in RA.AUTH:
        for k in range(n):
            names[R.A_AUTH + off + k] = name if n == 1 else "%s[%d]" % (name, k)
    names[R.A_LOGHEAD + RLH.LH_COUNT] = "log_count"
    names[R.A_LOGHEAD + RLH.LH_CAPACITY] = "log_capacity"
    names[R.A_LOGHEAD + RLH.LH_NEXT_SEQ] = "log_next_seq.hi"
    names[R.A_LOGHEAD + RLH.LH_NEXT_SEQ + 1] = "log_next_seq.lo"
    names.update(module_register_names())
    return names


def mode_name(v):
    return name_of(MODE_NAMES, v)


# ---- modules block (CAN slave modules) ------------------------------------
def _decode_rows(rows, regs, base):
    """Decode (name, off, n, type, ...) rows from ``regs`` (offset ``base``)."""
    return {row[0]: _value(regs, base + row[1], row[3]) for row in rows}


def bit_names(names, bits):
    return [names[i] if i < len(names) else "bit%d" % i for i in range(16) if bits & (1 << i)]


def decode_module(regs, base=0):
    """One module's registers -> dict with raw fields plus readable names."""
    m = _decode_rows(RMOD.MOD_FIELDS, regs, base)
    m["state_name"] = name_of(RMOD.MOD_STATE_NAMES, m["state"])
    m["why_names"] = bit_names(RMOD.MOD_WHY_BITS, m["why"])
    m["fault_names"] = bit_names(RMOD.MOD_FAULT_BITS, m["faults"])
    ss = m["slave_state"]
    m["slave_state_name"] = name_of(RMOD.SLAVE_STATE_NAMES, ss & 0x0F)
    m["age_s"] = None if m["age"] == RMOD.AGE_NEVER else m["age"] / 10.0
    m["temps_c"] = []
    for j in range(min(m["temp_count"], RMOD.MOD_TEMPS)):
        v = m["temp%d" % (j + 1)]
        m["temps_c"].append({RMOD.MOD_TEMP_ABSENT: "absent", RMOD.MOD_TEMP_OPEN: "open",
                             RMOD.MOD_TEMP_SHORT: "short"}.get(v, v / 10.0))
    v = m["version"]
    m["version_text"] = ("%d.%d.%d" % (v >> 24, (v >> 16) & 0xFF, (v >> 8) & 0xFF)
                         if v & 0xFF else "")
    m["balance_cells"] = [m["first_cell"] + j for j in range(16) if m["balance"] & (1 << j)]
    return m


def read_modules(client):
    """(header dict, list of module dicts) from the modules block."""
    head = _decode_rows(RMOD.MOD_HEAD, client.read(R.A_MODS, RMOD.MOD_HEAD_SIZE), 0)
    head["can_state_name"] = name_of(RMOD.CAN_STATE_NAMES, head["can_state"])
    n = min(head["module_count"], RMOD.MOD_MAX)
    mods = []
    if n:
        regs = client.read(R.A_MODS + RMOD.MOD_HEAD_SIZE, n * RMOD.MOD_STRIDE)
        for k in range(n):
            m = decode_module(regs, k * RMOD.MOD_STRIDE)
            m["module"] = k + 1
            mods.append(m)
    return head, mods


def module_register_names():
    names = {}
    for name, off, n, _t, _u, _d in RMOD.MOD_HEAD:
        for j in range(n):
            names[R.A_MODS + off + j] = name if n == 1 else "%s.%s" % (name, ("hi", "lo")[j])
    for k in range(RMOD.MOD_MAX):
        base = R.A_MODS + RMOD.MOD_HEAD_SIZE + RMOD.MOD_STRIDE * k
        for name, off, n, _t, _u, _d in RMOD.MOD_FIELDS:
            for j in range(n):
                full = "module%d.%s" % (k + 1, name)
                names[base + off + j] = full if n == 1 else "%s.%s" % (full, ("hi", "lo")[j])
    return names


__all__ = ("BmsClient", "BmsError", "param_index", "param_parse", "param_display")
