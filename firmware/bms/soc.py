"""State of charge: exact coulomb counting corrected by a Kalman filter on OCV.

Two layers, each doing what it is good at:

1. Coulomb counter (fast task, integers only).  Charge is whole mAh plus a
   residual in mA*ms (0 <= residual < 3.6e6), so a day of 50 ms steps adds
   no rounding drift and no product exceeds MicroPython's small-int range
   (no allocation) for packs up to 6500 Ah and currents up to 1000 A.
   Charge is counted at the charge (coulombic) efficiency, discharge at the
   discharge factor; the efficiency remainder is carried exactly too.

2. Estimator (slow task, integers): an iterated extended Kalman filter on a
   one-RC cell model, state ``[soc, v1, bias]`` (v1 = polarisation voltage
   of the RC pair, bias = OCV-table error), measurement = mean cell voltage
   = OCV(soc, T) + R0(T)*I + v1 + bias.  The filter does not integrate
   current itself: its prediction is the counter's own change since the
   last run, and its correction is written back into the counter as an
   integer charge adjustment, so the counter stays the single source of
   truth and the estimator cannot drift.  It runs in fixed point
   (``bms.fixmath``): on the RP2040 / ESP32 every float is a heap object,
   and a float filter allocated ~4.5 KB per second; this one allocates
   nothing and no intermediate leaves the 31-bit small-int range (checked
   over the benchmark day by host_tests/test_soc_intrange.py).  The float
   original is kept as the reference in tools/sim/soc_float.py.

Why these choices (the principled parts):
* The measurement Jacobian is dOCV/dSOC (``bms.ocv``), so a voltage reading
  moves SOC in proportion to what it says about SOC: a lot on NMC's slope or
  at LFP's knees, almost nothing on LFP's plateau.
* Current-sensor errors are biases (gain, offset), not white noise: the SOC
  standard deviation therefore grows *linearly* with the counted charge and
  the elapsed time (sigma += (g*|dQ| + i_off*dt)/Q per step) instead of with
  the square root that a textbook random-walk Q would give.  A gain error
  (and an unmeasured capacity's error) is a scale factor on the counted
  charge, so what a charge counts too much the discharge back counts too
  little: that part grows with the *net* SOC counted since a reading last
  set the SOC std (an anchor, a set value), g*(|N| - |N_prev|), and
  shrinks again as the count returns toward that point; only the charge
  efficiency's uncertainty (0.1 %) grows with every unit charged.
  Summing g*|dQ| instead made a day on the LFP plateau (no updates between
  the knees) twice as uncertain as it was, so after a full anchor the next
  charge's knee, a real cell's 40-70 mV off the table, pulled SOC 2 % off
  where the count alone was within 1 % (PyBaMM LFP trace).  A Kalman
  update sets the std only in part: it scales sd0 by q0 = sd_post /
  sd_prior, and the distance N to the reference with it (the reference
  moves toward the present SOC by the share of the uncertainty the reading
  removed: all the way at a rested knee, hardly under load).  Moving it all
  the way at every update made the growth the *gross* charge on a sloped
  chemistry (every second is an update there): a cycle from a knee to
  75 % and back left the counter 9 % of the round trip less sure than it
  was at the knee, and a real cell 70 mV below the table at 20-30 % (the
  PyBaMM NMC811 trace) pulled SOC 6.4 % low there; now 1.9 %.
* Voltage errors are also correlated (OCV-table error, hysteresis, R0 error
  under load, relaxation model error): consecutive 1 s readings are not
  independent.  The measurement variance is scaled by the correlation time
  over the update period (white part over ~10 s, bias part over ~10 min), so
  an hour on the LFP plateau cannot talk the filter into a table error.
  Under load the R0 and RC model errors (their values are guesses that
  depend on temperature, SOC and age) persist for the whole load, so they
  count as correlated over ~10 min, and the RC part scales with the
  polarisation the current will build (R1*I), not with what the model has
  built so far: a fresh boot straight into a charge does not read a lagging
  RC model as SOC.
* A fresh boot (no stored state) has no SOC information: its first update
  is the exact flat-prior limit of the Kalman update (``_flat_update``):
  SOC is the table's inverse of the reading, the RC and table-error states
  keep their priors, and the SOC variance is their variance plus the
  reading noise seen through the local slope (~10 % on the LFP plateau,
  ~1 % on NMC), limited to 50 % (the largest standard deviation a value
  confined to 0..100 % can have).  A wide Gaussian prior instead leaked a
  few % of the first innovation (tens of mV) into those states: on the
  plateau ~0.7 % SOC that took minutes to decay, and a result that
  depended on the start value.
* Iterated measurement update: the OCV table is piecewise linear and a
  restored or set SOC can still be tens of % away, across knees.  A single
  linearisation at the prior put a wrong share of the innovation into the
  RC and table-error states, where on the LFP plateau it stayed for hours;
  relinearising at the updated SOC (Gauss-Newton on the same prior, 1-4
  passes; a pass that stays on the previous pass's segment would repeat
  it exactly, so the loop stops there) lands on the table.
* Real cells differ from any generic OCV table by tens of mV (a published
  NMC811 cell -77..+42 mV from our NMC row, an LFP cell 20-65 mV below our
  plateau).  The table error is therefore a state with an honest prior
  (30 mV NMC / NA, 20 mV LTO, 12 mV LFP) that changes smoothly along the
  curve (correlated over 25 % of SOC and a day), so the voltage pulls SOC
  only as far as that uncertainty allows.
* Observed table error: a pack can sit further from the table than the
  chemistry's prior (the PyBaMM LFP cell: 20-65 mV against 12 mV).  At a
  relaxed rest (30 min) after a trusted point, where the counter knows SOC
  better than the table can tell it (slope * sd < half the table error:
  the LFP plateau), the reading less the bare table *is* the pack's table
  error there; its running magnitude (5 min of such readings, only within
  the table's voltage range: below 0 % a cell is over-discharged, not off
  the table) replaces the prior where it is larger, so the voltage of such
  a pack pulls SOC less.  After a set SOC nothing is learned: the counter's
  SOC is then a claim, and its error would be read as table error.
* Slope gate: where the table is flatter than 0.3 V per unit SOC (the LFP
  plateau, 20-90 %), voltage corrects nothing under load or in short rests;
  after 30 min of rest only if the table's error seen through the slope is
  smaller than the counter's own uncertainty.  There, plain coulomb
  counting is the estimate, so the filter is never worse than it.
* Lost SOC: at rest on a slope, a reading more than 3 sigma (SOC, table,
  noise) from the counter's SOC on the bare table for a minute means the
  set / restored SOC was wrong: SOC starts again from the table (the
  flat-prior update).  While the check is pending the update waits, since
  absorbing it would park most of the error in the table-error state.  A
  value set meanwhile gets a minute of its own (the count starts again).
* CV tail: a charger ends a charge at its charge voltage with the current
  tapered (C/20..C/10), below OV1, so the manual's calibration never fires.
  The mean cell above ``V_TAIL_MV`` with 0 < I <= C/15 for 30 s anchors SOC
  at the table's value of the rested voltage there (the reading less R0*I
  and R1*I), on the steep top where a table error is a small SOC error
  (sd = table error / slope, 0.5..3 %); once per charge.  It is a reading
  like any other, so it is combined with the counter's SOC by their
  uncertainties (the scalar Kalman combination): on LFP's steep top it all
  but sets SOC, on NMC's (3 % against the counter's 2-3 %) it moves SOC
  about halfway (a PyBaMM NMC811 cell ends its CV 40 mV off the table
  there: set outright, SOC was 6.4 % off).  The table-error state restarts
  from its prior (kept, it pulled SOC back by its value at the next
  update), correlated with the SOC by f = sd_counter / hypot(sd_counter,
  sd_tail): the combined SOC carries the share f**2 of the table's error
  there.  Left uncorrelated, the readings after the tail took the same
  table error once more as SOC (PyBaMM NMC after the tail 5.2 -> 5.0 %,
  LFP 1.31 -> 1.17 %).  It counts as a full anchor for capacity learning
  over the SOC span between anchors.
  The lower knee needs no separate anchor: its slope (0.5-3 V per unit)
  gives the Kalman update the weight it needs there.
  Before the tail, while charging (above the rest current: a sensor's
  offset at rest is no charge, and it held the rested readings after a tail
  until the next load applied them at once) with the mean cell at or above
  ``V_TAIL_MV`` (the charger's voltage limit and the last minutes of CC
  before it), the reading updates nothing: held at the limit by the
  charger, the cell's state shows in the current's taper, which diffusion
  polarisation dominates and the one-RC model does not describe (the
  PyBaMM NMC811 cell read 30-35 mV above the model for the whole CV
  phase, and the update moved SOC 2.7 % up in 20 min); the tail anchor is
  the reading made for that region.  SOC is counted there, as on the
  plateau.
* Cold: the usable capacity follows the cell temperature (``COLD_CAP_PM``,
  typical 0.2C retention per chemistry); the counter keeps the SOC fraction
  as it changes.
* The manual's calibration is kept exactly: the level-1 over-voltage cut-off
  sets 100 %, the level-1 under-voltage cut-off sets 0 % (TOPBMS "SOC
  calibration": discharge to UV, charge to OV), and both collapse the
  filter's uncertainty.  A full -> empty or empty -> full run between two
  such anchors measures the capacity (capacity learning); SOH is learned /
  rated capacity.  The counter stops at full and at empty: charge counted
  into a pack an anchor found full (OV1, CV tail: a charger's float, a
  shunt's offset) or out of one it found empty was not stored, so no
  capacity measurement from that anchor (this one or the on-line one
  below) includes it (0.5 A of float for 10 h made a 90 Ah run 85 Ah);
  from a point at the other end it stays in (the pack holds more than the
  capacity in use).
* On-line capacity: an aged pack (80 % left, the rated capacity still in
  the parameters) is the common case, and a full-to-empty run is rare.  The
  capacity is a scalar Kalman state of its own (relative sd 10 % while
  unmeasured, floor 2 %), measured between two *trusted points*: an anchor
  (OV1 / UV1 / CV tail) or a rested (10 min) reading that left SOC known to
  2 % (a knee, the sloped NMC curve), or the first reading after a boot
  without stored state at rest (SOC from the table with its honest sd: the
  relays were open while the BMS was off, so the cells have rested; a
  lost-SOC restart after a minute's rest is not one).  Two of them more than 25 % of SOC
  apart give counted charge / SOC span; its error is the two points' SOC
  errors and the current offset over the span, plus the 1 % gain error; a
  measurement 3 sigma away is dropped (a wrong table, not the capacity).
  Readings under load do not count as trusted: there the posterior leans on
  the count, and a capacity measured from it learns its own guess (the
  week profile learned 92 % of a true 100 %).  Until measured, the
  capacity's uncertainty above the floor also widens the SOC uncertainty
  with every unit of SOC counted, so the voltage may correct an aged
  pack's drift.  Limits: it needs two trusted points; on the LFP plateau
  a boot reading is worth only ~10 % of SOC (12 mV / 0.1 V per unit), so
  the discharge to the lower knee measures the capacity weakly (K ~0.2) and
  the first charge crosses 90 % of SOC on a capacity still ~15 % high: an
  aged LFP pack is wrong by that error over the span until the first full
  anchor (bench: 16 %); a table wrong at a knee gives a wrong trusted point.
  Tried and dropped: the capacity as a joint state (SOC-capacity
  correlation, every correction moving the capacity by its regression):
  NMC aged 7.3 -> 4.5 %, but a knee 100+ mV off the table (PyBaMM LFP)
  taught it a wrong capacity (after-full 2.95 -> 7.9 %); the trusted-point
  learner's span and 3-sigma checks are the safer form.
  Where the remaining bench errors come from (diagnosed, not tuned away):
  the PyBaMM NMC811 cell is, over 20-85 % of SOC, our NMC table stretched
  by 1.24 (its OCV rises 595 mV there, the table 480 mV; 1.24 ~ 1 / 0.8),
  and the NMC aged row is an 80 % pack on the exact table: to anything that
  reads voltage against counted charge the two look the same until an end
  anchor (OV1 / UV1) tells them apart.  Every weight that lets the voltage
  pull SOC harder fixes one and breaks the other (a 22 mV table prior:
  aged 4.3 -> 3.4 %, PyBaMM no-full 6.6 -> 6.9 %; 15 % capacity prior:
  3.2 / 7.0 %; 40 mV: 5.0 / 6.2 %).  NMC aged 80 % (4.3 %): the first
  discharge, before any capacity measurement, 60 -> 5 % at 0.1-0.4C, ends
  4 % high.  NMC PyBaMM no full charge (5.7 %): the same first discharge,
  5.6 % low at 18 % SOC (the cell 75 mV below the table there).  NMC
  PyBaMM after a full charge (5.0 %): at the end of a 4.10 V CV charge the
  cell is at 83-86 % while the tail reading says 90-92 % (+36 mV off the
  table there), so each tail leaves SOC ~4 % high; the knee (-99 mV) and
  the tail then measure a capacity 6-7 % low, and the largest error is at
  16 % SOC, -5.0 %.  Both need the pack's own OCV points (below), not a
  wider prior; on the one-day profiles those are learned only after the
  day's end anchor, too late for these rows.
* Learned OCV points: the pack's own table.  After an end anchor (OV1,
  UV1, a CV tail) the count alone tells SOC at a later rest to
  sd_c = sd_anchor + (gain + capacity error) * |SOC counted| + offset * time;
  at the first relaxed (30 min) reading of each rest in 15..35 degC, where
  that error seen through the slope is below the chemistry's table prior,
  the reading less the table at the counted SOC is a measurement of the
  table's error there.  The table's breakpoints carry offsets (W) with
  their own std (prior: the chemistry's table error), each updated by a
  scalar Kalman step with its correlation to the reading's place,
  exp(-distance / 0.25) (a table error is a smooth curve, as the
  table-error state assumes); the moved table must keep every segment's
  half rise (``soc_q28`` inverts it: a step that would fold it is halved
  up to three times, or dropped; one rest moves the LFP plateau by at most
  ~12 mV, a uniform shift keeps every rise).  The estimator then reads the
  moved table everywhere (update, lost-SOC check, flat start, CV tail), and
  its table-error prior at a point is that point's std where it is smaller,
  never below 5 mV (``SB_LEARNED_MIN_W``: hysteresis, temperature, ageing).
  What the learned move took at the present SOC leaves the table-error
  state (it held the same error).  Not learned: after a set SOC (a claim),
  a boot without stored state (the table told SOC), in the cold, within
  25 % of SOC of the anchor (a CV tail's SOC came from the table there:
  the rest would measure the table against itself), at the knees (the
  count is worth less than the table there: nothing to learn),
  far from the anchor on an unmeasured capacity (its 10 % uncertainty).
  The points are saved by the services (their own A/B record) and restored
  at every boot; another chemistry, a folded table or a std beyond the
  prior restores the bare table, as do a chemistry change and the
  ``ocv_forget`` command (new or rebuilt cells).

Integer units of the estimator (and why each scale):
* SOC: Q28 (1.0 = 2**28).  Fine enough that a 1 s Kalman correction of
  4e-9 (0.0004 mAh on 100 Ah) is not rounded away, coarse enough that 1.0
  leaves a factor 2 of headroom below the saturation limit 2**29.
* Voltages (cell voltage, OCV, R0*I, v1, bias, innovation, standard
  deviations of v1 and bias, measurement noise): W = 2**-7 uV (1 mV =
  128000 W).  A 5 V cell reading is 6.4e8 < 2**30 (kept exact, never
  saturated); R0*I, v1 and bias are limited to +-1.05 V (2**27) so their
  sums stay small ints; 8 nV resolution keeps the slow drift of the
  table-error state (sub-uV per second on the LFP plateau).
* OCV slope h: uV per unit SOC (LFP plateau 9e4, steepest knee 2e7).
* Covariance: stored as standard deviations and correlation coefficients,
  not as the matrix: sd_soc in Q30 of SOC (1e-4 .. 0.5), sd_v1 and sd_bias
  in W, correlations in Q28 (-1 .. 1).  A covariance matrix spans 1e-10 to
  0.25 (15 decades in its squares); its square root form spans half the
  decades in magnitude and correlations are bounded, so each fits one fixed
  scale.  The measurement update runs in normalised coordinates (the
  state divided by its standard deviation), where the gains and the
  covariance reduction are dimensionless; the voltage-like terms of one
  update (h*sd_soc, sd_v1, sd_bias, sqrt(R)) are scaled together by a
  power of two into 2**22..2**23 so their products keep 20+ bits.
* Decay factors exp(-dt/tau) and correlations: Q28.  Times: ms.
* R0: 1e-8 ohm (0.8 mOhm = 80000; 3 ohm still fits).  Current: mA.
* Temperature: t2 = Tmin + Tmax of the cell sensors in 0.1 degC, i.e.
  the mean in 0.05 degC (500 = 25 degC), limited to -50 .. +150 degC.
exp() is ``fixmath.exp_neg`` (table + polynomial, abs. error < 2e-7),
sqrt is an integer root refined by one Newton step (<= 2 units), hypot
avoids squaring (rel. error < 2**-18); products and quotients saturate at
2**29 instead of overflowing (``bms.fixmath``).  Floats remain only outside the slow task:
``soc_frac``, ``r0_ohm``, ``v1_v``, ``bias_v`` for tests and tools.

Persistence: ``get_state`` / ``set_state`` (and ``save_to`` / ``load_from``
for an object with the settings store's ``State`` attribute names) carry
SOC, remaining charge, learned capacity, cycles and throughput across a
reboot; ``get_ocv_points`` / ``set_ocv_points`` the learned OCV points
(``bms.store`` keeps them in a record of their own).
"""
from array import array

from micropython import const

from bms import ocv
from bms.fixmath import ONE, SAT, clamp, div, exp_neg, hypot, mul, sqrt
from bms.measurements import ROLE_CELL, T_NONE_MIN
from bms.params import P_CAPACITY, P_CHEMISTRY
from bms.ticks import ticks_diff

MAH_MS = const(3600000)     # mA*ms in one mAh
# Coulombic efficiency (per mille of the charge put in that the cells store)
# in CHEM_* order; published values are 99.8-99.95 %.
CHG_EFF_PM = (999, 999, 999, 998)
_DSG_EFF_PM = const(1000)    # every counted mAh out of the pack left the cells

_LEARN_MIN_PM = const(500)   # a learned capacity must be 50..120 % of rated
_LEARN_MAX_PM = const(1200)
# On-line capacity (relative standard deviations in Q30).  The rated capacity
# in the parameters is a guess for a used pack (an aged one has 80 % left):
# 10 % until measured, never below 2 % (sensor gain, temperature, ageing).
_SDC_RATED = const(107374182)    # 0.10
_SDC_RESTORED = const(42949673)  # 0.04: a learned value from the store
_SDC_MIN = const(21474836)       # 0.02
_SIG_GAIN_Q30 = const(10737418)  # 0.01: current-sensor gain error
_SIG_EFF_Q30 = const(1073742)    # 0.001: charge efficiency (published 99.8-99.95 %)
# A trusted point (SOC known to 2 %: an anchor, a knee, the sloped curve):
# between two of them more than 25 % of SOC apart, counted charge / SOC
# span measures the capacity.
_SD_TRUST = const(21474836)      # 0.02, Q30
_SPAN_MIN = const(67108864)      # 0.25, Q28
_CP_MS_MAX = const(0x20000000)   # limit of the elapsed ms (6 days) and mAh counters
# Lifetime discharge (mAh) stops here, a small int on every port: 1.07 million
# Ah, about 3 years of a daily cycle of a 1000 Ah pack; beyond, every count
# would allocate a long int in the fast task.
TOTAL_MAX_MAH = const(0x3FFFFFFF)

# Estimator tuning (see module docstring), in the integer units above; the
# float value each stands for is in the comment.
W_PER_MV = const(128000)    # voltage unit W = 2**-7 uV
# SIG_GAIN 1 %: sd_soc grows by |dSOC| / 100 (Q28 -> Q30: |ds| * 4 / 100)
# SIG_OFFSET_A 0.05 A: sd_soc grows by 0.05 A * dt / capacity (see estimate)
_SIG_WHITE_W = const(256000)     # 2 mV per-reading noise of the mean cell voltage
_T_WHITE_MS = const(10000)       # its correlation time (10 s): sqrt(T / dt) = 100 / sqrt(dt_ms)
# OCV-table error (1 sigma): how far a real cell's rested curve sits from our
# generic table.  Cells of different makers differ by tens of mV (a published
# NMC811 cell: -77..+42 mV against this NMC row; an LFP cell 20-60 mV below the
# LFP plateau), so 30 mV on the sloped chemistries; on the LFP plateau the
# slope gate below does most of the work, and 12 mV keeps its knees useful.
# array, not tuple: a frozen tuple keeps ints beyond +-8191 as long ints (see
# docs/deploy.md section 5, "Long-int constants in frozen code").
SIG_BIAS_W = array("i", (3840000, 1536000, 2560000, 3840000))  # 30, 12, 20, 30 mV
# L_BIAS 0.25: a cell's table error is a smooth curve: it decorrelates over
# 25 % of SOC ...
_T_BIAS_MS = const(86400000)     # ... or over a day (temperature, hysteresis history)
# Slope gate: below 0.3 V per unit SOC (3 mV per %: the LFP plateau) a
# table error of a few mV is several % of SOC, so voltage may correct SOC
# there only after a long rest (relaxed, no hysteresis of the last load).
_H_GATE_UV = const(300000)
_REST_LONG_MS = const(1800000)   # 30 min
_REST_MS = const(600000)         # 10 min: the RC pair has relaxed (tau 90 s)
_T_SB_MS = const(300000)         # 5 min: averaging time of the observed table error
# SOC from the table alone at the next reading (_flat): not, after a boot
# without stored state, or after SOC was lost at rest.
_FLAT_NO = const(0)
_FLAT_BOOT = const(1)
_FLAT_LOST = const(2)
# Lost SOC: at rest on a sloped segment the reading disagrees with the
# counter and the bare table by more than 3 sigma of SOC, table error and
# noise for a minute: the stored / set SOC was wrong, not the table.  Start
# again from the table (the flat-prior update, table-error state at its prior).
_LOST_N = const(60)
# Full as a charger ends a charge: the mean cell at the charge voltage
# region with the current tapered below C/15 for 30 s (CV tail; chargers
# end at C/20..C/10, and a 1 % gain error must not hide the end).  A charger
# stops below OV1, so the manual's calibration alone would never fire.
V_TAIL_MV = (4050, 3400, 2600, 3800)
_TAIL_MS = const(30000)
# Usable capacity in the cold (per mille of 25 degC at -20, -10, 0, 25 degC;
# typical published 0.2C retention: LFP loses more than NMC; CHEM_* order).  Between the
# points it is linear; the counter keeps the SOC fraction when it changes,
# as the charge the cold cells can deliver shrinks with them.
COLD_CAP_PM = ((780, 860, 920, 1000), (600, 760, 880, 1000),
               (800, 880, 940, 1000), (700, 820, 910, 1000))
_COLD_T2 = (-400, -200, 0, 500)     # the points above as t2 (0.05 degC)
_SQRT_T_LOAD_Q14 = const(12690992)  # sqrt(600000 ms) in Q14: R0 / RC model errors persist ~10 min
# SIG_R0 0.25 (>> 2) and SIG_V1 0.5 (>> 1): relative uncertainties of R0 and the RC voltage
_SD0_INIT = const(0x20000000)    # 0.5: SOC std without stored state (no information), Q30
_SD0_MAX = const(0x20000000)     # 0.5: no SOC standard deviation is larger
_SD0_RESTORED = const(32212255)  # 0.03 after a reboot with stored state
_SD0_CAL = const(5368709)        # 0.005 right after a full / empty calibration
_SD0_MIN = const(107374)         # 1e-4 (variance floor 1e-8)
_SD1_INIT = const(1280000)       # 10 mV prior std of the RC voltage
_SD1_FLOOR_W = const(1280)       # 10 uV: process-noise floor of the RC voltage (1e-10 V**2)
_V_LIM = const(0x8000000)        # 1.05 V: |R0*I|, |v1| and |bias| are limited to this (yb < 2**30)
# Cell model per chemistry (R0 in 1e-8 ohm * Ah: R0 = k / capacity_Ah at 25 degC),
# RC pair: R1 = 0.7 * R0 with time constant 90 s.
R0_U_AH = array("i", (10000000, 8000000, 6000000, 10000000))   # 0.10, 0.08, 0.06, 0.10 ohm*Ah
_R1_FRAC_Q28 = const(187904819)  # 0.7
_TAU_MS = const(90000)
# R0 grows ~4 %/K below 25 degC: factor (1000 - t2) / 500.
# Learned OCV points (module docstring): offsets of the table's breakpoints
# for this pack, learned at relaxed rests whose SOC the count from an end
# anchor fixes.
OCV_PTS_MAX = const(16)          # the longest table row (LFP)
_OFF_MAX_W = const(7680000)      # 60 mV: further off is another chemistry, not a table error
_OL_NOISE_W = const(384000)      # 3 mV: a rested reading's own error (relaxation, hysteresis)
# A learned point is never trusted below 5 mV (hysteresis, temperature, ageing
# since it was learned).  Learned in 15..35 degC only (t2 300..700).
SB_LEARNED_MIN_W = const(640000)
OL_PER_CALL = const(2)          # breakpoints per slow task while learning (_learn_work)
_OL_T2_LO = const(300)
_OL_T2_HI = const(700)
IEKF_PASSES = const(4)      # measurement relinearisations per update
_CONV_Q28 = const(26844)     # 1e-4: relinearisation converged
_D_MIN_Q28 = const(16)       # smallest remaining variance fraction of one update


def _lerp(a, b, f):
    """a + (b - a) * f for a position ``f`` (Q28) between two breakpoints."""
    return a + mul(b - a, f, 28)


def _cold_q20(t2):
    """R0 temperature factor 1 + 0.04/K * (25 degC - T) below 25 degC, Q20."""
    return div(1000 - t2, 500, 20) if t2 < 500 else 0x100000


class Soc:
    def __init__(self, params, soc_pm=500):
        self.params = params
        self.chem = params[P_CHEMISTRY]
        self.rated_mah = params[P_CAPACITY] * 100
        self.learned_mah = 0          # 0: not learned yet
        self.capacity_mah = self.rated_mah
        self.chg_eff_pm = CHG_EFF_PM[self.chem]
        self.dsg_eff_pm = _DSG_EFF_PM
        self.remaining_mah = 0
        self._res = 0                 # mA*ms, 0 <= _res < MAH_MS
        self._eff_rem = 0             # efficiency remainder, 1/1000 mA*ms
        self.soc_pm = 0
        self.cycles = 0
        self.throughput_mah = 0       # discharged since the last cycle count
        self.total_dsg_mah = 0        # lifetime discharge (for the log / app)
        # Capacity learning: net counted charge since the last anchor.
        self._anchor = 0              # 0 none, 1 full, -1 empty
        self.full_anchors = 0         # full anchors since boot (the core's full-charge request)
        self._anchor_frac = ONE       # SOC of the last full anchor (Q28)
        self._learn_mah = 0
        self.last_learned_mah = 0     # last measurement (before averaging)
        self.cal_full = 0             # calibration event counters
        # On-line capacity learning between trusted points (_trusted).
        self.sd_cap = _SDC_RATED      # relative capacity std, Q30
        self._cp_ok = False           # a trusted point is held
        self._cp_s = 0                # its SOC, Q28
        self._cp_sd = 0               # its SOC std, Q30
        self._cp_mah = 0              # net counted charge since, mAh
        self._cp_ms = 0               # time since, ms (capped)
        self._cp_end = 0              # 1 / -1: it is a full / empty anchor
        self.cap_updates = 0          # capacity measurements taken
        self.cal_empty = 0
        # Estimator state.
        self.est_enabled = True
        # Called between the estimator's stages (Bms sets it: the ports'
        # service).  The step takes 8-9 ms on an RP2040 (emulated); a Modbus
        # request that ended inside it was read only afterwards.
        self.service = None
        self.v1 = 0                   # RC polarisation voltage, W
        self.bias = 0                 # OCV table error state, W
        self.sd0 = _SD0_INIT           # SOC std, Q30
        self.sd1 = _SD1_INIT           # v1 std, W
        self.sd2 = SIG_BIAS_W[self.chem]  # bias std, W
        self.sb_obs = 0               # table error seen at rests where SOC was known, W
        self.c01 = 0                  # correlations, Q28
        self.c02 = 0
        self.c12 = 0
        self.r0_learned = 0           # 1e-8 ohm at 25 degC, 0 = use the model value
        self._prev_s = 0              # Q28
        self._s_ref = 0               # counter SOC when a reading last set sd0, Q28
        self._prev_v = 0              # W
        self._prev_i = 0              # mA
        self._prev_ms = 0
        self._dt = 0                  # the last update period (ms) and what depends on it only:
        self._a = ONE                 # exp(-dt / tau), Q28
        self._fw = 0                  # sqrt(T_white / dt), Q14
        self._fl = 0                  # sqrt(T_load / dt), Q14
        self._est_seen = False
        self.innovation_mv = 0
        self.est_updates = 0
        self.rest_ms = 0              # time at rest (|I| <= C/50), capped
        self._lost = 0                # consecutive >3 sigma readings at rest
        self._tail_ms = 0             # time in the CV tail
        self._tail_armed = True       # one tail anchor per charge
        self.gated = 0                # updates skipped by the slope gate
        self.cal_tail = 0             # CV-tail anchors
        self.resets = 0               # lost-SOC restarts from the table
        self.cold_pm = 1000           # usable capacity at the cell temperature
        # Learned OCV points: per breakpoint of the chemistry's table, the
        # pack's offset (W) and its std (W); _off is None until one is learned
        # (the bare table, exactly as before).
        self.ocv_off = array("i", [0] * OCV_PTS_MAX)
        self.ocv_sd = array("i", [0] * OCV_PTS_MAX)
        # A learning step in progress (_learn_point, _learn_work): scratch
        # per point, the reading's SOC, segment, position, prior std,
        # innovation share and move; _ol_k the next point, -1 none.
        self._ol_tmp = array("i", [0] * OCV_PTS_MAX)
        self._ol_rho = array("i", [0] * OCV_PTS_MAX)
        self._ol_sd = array("i", [0] * OCV_PTS_MAX)
        self._ol_k = -1
        self._ol_try = 0
        self._ol_s = 0
        self._ol_j = 0
        self._ol_f = 0
        self._ol_ss = 1
        self._ol_g = 0
        self._ol_a = 0
        self._off = None
        self.ocv_learned = 0          # rests learned from
        self.ocv_dirty = False        # learned since the services last saved them
        self._ocv_reset()
        # The count since the last end anchor (OV1 / UV1 / CV tail), which
        # alone (not the table) tells SOC at a later rest.
        self._an_ok = False
        self._an_s = 0                # SOC at the anchor, Q28
        self._an_sd = 0               # its std, Q30
        self._an_mah = 0              # net counted since, mAh
        self._an_ms = 0               # time since, ms (capped)
        self._an_end = 0              # 1 / -1: full / empty
        self._ol_rest = False         # this rest has been learned from
        self._pver = params.version
        self.set_pm(soc_pm)
        self.sd0 = _SD0_INIT
        self._flat = _FLAT_BOOT       # no SOC information yet (see _flat_update)

    # ---- derived values --------------------------------------------------
    @property
    def soh_pm(self):
        """State of health: learned / rated capacity in per mille (1000 if unknown)."""
        if not self.learned_mah or not self.rated_mah:
            return 1000
        v = self._ratio_pm(self.learned_mah, self.rated_mah)
        return 1000 if v > 1000 else v

    @property
    def sigma_pm(self):
        """The estimator's 1-sigma SOC uncertainty in per mille."""
        return (mul(self.sd0, 2000, 30) + 1) >> 1

    @property
    def v1_v(self):
        """RC polarisation voltage in V (float: tests and tools only)."""
        return self.v1 / (W_PER_MV * 1000.0)

    @property
    def bias_v(self):
        """OCV-table error state in V (float: tests and tools only)."""
        return self.bias / (W_PER_MV * 1000.0)

    def soc_frac(self):
        """SOC as a float fraction with the residual included (tests, benches)."""
        c = self.capacity_mah
        return (self.remaining_mah + self._res / MAH_MS) / c if c else 0.0

    @staticmethod
    def _ratio_pm(a, b):
        # a * 1000 // b without leaving small ints for a, b < 6.5e6.
        if a < 1000000:
            return a * 1000 // b
        return a // (b // 1000) if b >= 1000 else a * 1000 // b

    def _update_pm(self):
        c = self.capacity_mah
        self.soc_pm = self._ratio_pm(self.remaining_mah, c) if c else 0

    # ---- parameters ------------------------------------------------------
    def _refresh(self):
        p = self.params
        self._pver = p.version
        chem = p[P_CHEMISTRY]
        if chem != self.chem:
            self.chem = chem
            self.chg_eff_pm = CHG_EFF_PM[chem]
            self.r0_learned = 0
            self._ocv_reset()
            self.ocv_dirty = True
        rated = p[P_CAPACITY] * 100
        if rated != self.rated_mah:
            # The user entered the pack's capacity: that is newer knowledge
            # than anything learned against the old value.
            self.rated_mah = rated
            self.learned_mah = 0
            self._anchor = 0
            self.sd_cap = _SDC_RATED
            self._cp_ok = False
            self._set_capacity(self._at_temp(rated))

    def _at_temp(self, cap):
        """``cap`` (mAh at 25 degC) as usable at the present cell temperature."""
        f = self.cold_pm
        return cap if f >= 1000 else (cap // 1000) * f + (cap % 1000) * f // 1000

    def _cold_capacity(self, t2, chem):
        """Follow the usable capacity as the cells cool or warm (1 per mille steps)."""
        ts = _COLD_T2
        ps = COLD_CAP_PM[chem]
        if t2 >= ts[3]:
            f = 1000
        elif t2 <= ts[0]:
            f = ps[0]
        else:
            j = 0
            while t2 > ts[j + 1]:
                j += 1
            f = ps[j] + (ps[j + 1] - ps[j]) * (t2 - ts[j]) // (ts[j + 1] - ts[j])
        if f != self.cold_pm:
            self.cold_pm = f
            base = self.learned_mah if self.learned_mah else self.rated_mah
            self._set_capacity(self._at_temp(base))

    def _set_capacity(self, cap):
        if cap == self.capacity_mah or cap <= 0:
            return
        # Keep the fraction, not the absolute charge.
        s = self._frac()
        self.capacity_mah = cap
        self._set_q28(s)

    def _frac(self):
        """SOC of the counter in Q28 (residual included)."""
        c = self.capacity_mah
        if c <= 0:
            return 0
        return div(self.remaining_mah, c, 28) + div(self._res, MAH_MS, 28) // c

    def _set_q28(self, s):
        """Set the counter to SOC ``s`` (Q28, clamped)."""
        self.remaining_mah = 0
        self._res = 0
        self._apply(s if s > 0 else 0)

    # ---- coulomb counting (fast task, integers, no allocation) -----------
    def integrate(self, current_ma, dt_ms):
        """Count ``current_ma`` (+ = charging) flowing for ``dt_ms``."""
        if self._pver != self.params.version:
            self._refresh()
        q = current_ma * dt_ms
        eff = self.chg_eff_pm if q > 0 else self.dsg_eff_pm
        if eff != 1000:
            k = 1000 - eff
            qa = q // 1000
            r = self._eff_rem + (q - qa * 1000) * k
            lr = r // 1000
            self._eff_rem = r - lr * 1000
            q -= qa * k + lr
        r = self._res + q
        whole = r // MAH_MS
        self._res = r - whole * MAH_MS
        if whole:
            self._count(whole)

    def _count(self, whole):
        cap = self.capacity_mah
        if self._anchor:
            self._learn_mah += whole
        c = self._cp_mah + whole
        if -_CP_MS_MAX < c < _CP_MS_MAX:    # months of float charge: stays a small int
            self._cp_mah = c
        if self._an_ok:
            c = self._an_mah + whole
            if -_CP_MS_MAX < c < _CP_MS_MAX:
                self._an_mah = c
            else:
                self._an_ok = False
        if whole < 0:
            if self.total_dsg_mah <= TOTAL_MAX_MAH + whole:
                self.total_dsg_mah -= whole
            else:
                self.total_dsg_mah = TOTAL_MAX_MAH
            t = self.throughput_mah - whole
            if t >= cap > 0:
                t -= cap
                self.cycles += 1
            self.throughput_mah = t
        rem = self.remaining_mah + whole
        if rem < 0:
            self._beyond(-1, rem)       # the part of this count below empty
            rem = 0
        elif rem >= cap:
            if rem > cap:
                self._beyond(1, rem - cap)
            rem = cap
            self._res = 0
        self.remaining_mah = rem
        self._update_pm()

    def _beyond(self, end, q):
        """``q`` mAh counted beyond full (``end`` 1) or empty (-1), where the
        counter stops: after an anchor at that end, charge into a full pack
        (a charger's float, a shunt's offset) or out of an empty one was not
        stored, so the capacity measurements from that anchor leave it out.
        From a point at the other end it stays in: the pack holds more than
        the capacity in use."""
        if self._anchor == end:
            self._learn_mah -= q
        if self._cp_end == end:
            self._cp_mah -= q
        if self._an_end == end:
            self._an_mah -= q

    # ---- manual set and the manual's calibration -------------------------
    def set_pm(self, soc_pm):
        """User or tool sets SOC (per mille); the estimator trusts it moderately."""
        if soc_pm < 0 or soc_pm > 1000:
            raise ValueError("soc 0..1000 per mille")
        c = self.capacity_mah
        self.remaining_mah = c * soc_pm // 1000 if c < 1000000 else (c // 1000) * soc_pm
        self._res = 0
        self._update_pm()
        self.soc_pm = soc_pm
        self.sd0 = _SD0_RESTORED
        self._s_ref = self._frac()
        self.c01 = 0
        self.c02 = 0
        self._flat = _FLAT_NO
        self._lost = 0                # its own minute before the lost-SOC check
        self._cp_ok = False           # a set value is not a measured one
        self._an_ok = False
        # The estimator's prediction is the counter's change since its last
        # run: a set value is not counted charge, so start a fresh interval.
        self._est_seen = False

    def calibrate_full(self):
        """Level-1 over-voltage cut-off reached while charging: 100 %."""
        learned = self._anchor_event(1)
        self.remaining_mah = self.capacity_mah
        self._res = 0
        self.soc_pm = 1000
        self._collapse()
        self._trusted(ONE, _SD0_CAL, not learned, 1)
        self._end_anchor(ONE, _SD0_CAL, 1)
        self.cal_full += 1

    def calibrate_empty(self):
        """Level-1 under-voltage cut-off reached while discharging: 0 %."""
        learned = self._anchor_event(-1)
        self.remaining_mah = 0
        self._res = 0
        self.soc_pm = 0
        self._collapse()
        self._trusted(0, _SD0_CAL, not learned, -1)
        self._end_anchor(0, _SD0_CAL, -1)
        self.cal_empty += 1

    def _collapse(self):
        self._flat = _FLAT_NO
        self.sd0 = _SD0_CAL
        self._s_ref = self._frac()
        self.c01 = 0
        self.c02 = 0

    def _anchor_event(self, kind, frac=ONE):
        """Capacity learning: the counted charge between opposite anchors
        (a CV-tail full anchor at SOC ``frac`` < 1: the charge over that span).
        True if it measured the capacity."""
        learned = False
        if kind > 0:
            self.full_anchors = (self.full_anchors + 1) & 0x3FFFFFFF
        if self._anchor == -kind:
            q = self._learn_mah if kind > 0 else -self._learn_mah
            span = frac if kind > 0 else self._anchor_frac   # SOC between the anchors
            if span < ONE:
                q = div(q, span, 28) if span > ONE // 2 else 0
            if self.cold_pm < 1000:
                q = q * 1000 // self.cold_pm if q < 1000000 else q // self.cold_pm * 1000
            rated = self.rated_mah
            if rated and _LEARN_MIN_PM <= self._ratio_pm(q, rated) <= _LEARN_MAX_PM:
                self.last_learned_mah = q
                # Average with the previous value: one odd cycle (a load
                # that was not counted, a warm day) moves it only halfway.
                self.learned_mah = q if not self.learned_mah else (self.learned_mah + q) // 2
                self._set_capacity(self._at_temp(self.learned_mah))
                if self.sd_cap > _SDC_RESTORED:
                    self.sd_cap = _SDC_RESTORED
                learned = True
        self._anchor = kind
        self._anchor_frac = frac
        self._learn_mah = 0
        return learned

    def _trusted(self, s, sd, learn, end=0):
        """A point where SOC ``s`` (Q28) is known to ``sd`` (Q30): an anchor,
        a knee, the sloped curve after the Kalman update.  With the last such
        point more than ``_SPAN_MIN`` away, the charge counted between them
        over their SOC span measures the capacity; otherwise the better of
        the two is kept (a longer span is a better measurement)."""
        if self._cp_ok and learn:
            span = s - self._cp_s
            if span >= _SPAN_MIN or span <= -_SPAN_MIN:
                self._learn_capacity(span, sd)
            elif sd > self._cp_sd:
                return
        self._cp_ok = True
        self._cp_s = s
        self._cp_sd = sd
        self._cp_mah = 0
        self._cp_ms = 0
        self._cp_end = end

    def _learn_capacity(self, span, sd):
        """Scalar Kalman update of the capacity (relative units) from the
        charge counted over ``span`` (Q28) between two trusted points; the
        measurement's relative error is the two points' SOC errors and the
        current offset over the interval, over the span, plus the gain error."""
        q = self._cp_mah
        if span < 0:
            q = -q
            span = -span
        if q <= 0:
            return
        f = self.cold_pm
        if f < 1000:
            q = q * 1000 // f if q < 1000000 else q // f * 1000
        meas = div(q, span, 28)             # mAh at 25 degC over 0..100 %
        rated = self.rated_mah
        base = self.learned_mah if self.learned_mah else rated
        if base <= 0 or meas <= 0:
            return
        # 0.05 A offset over the interval, relative to the capacity (Q30).
        off = div(self._cp_ms // 1000, base * 72, 30) if base < 7000000 else 0
        r = div(hypot(hypot(self._cp_sd, sd), off), span, 28) + _SIG_GAIN_Q30
        e = clamp(div(meas - base, base, 28), SAT)    # relative innovation, Q28
        sc = self.sd_cap
        pc = mul(sc, sc, 30)
        tot = pc + mul(r, r, 30)
        if mul(e, e, 28) > 9 * (tot >> 2):
            return      # > 3 sigma: a wrong trusted point, not the capacity
        k = div(pc, tot, 28)
        c = base + mul(base, mul(k, e, 28), 28)
        lo = rated * _LEARN_MIN_PM // 1000 if rated < 1000000 else rated // 1000 * _LEARN_MIN_PM
        hi = rated * _LEARN_MAX_PM // 1000 if rated < 1000000 else rated // 1000 * _LEARN_MAX_PM
        c = lo if c < lo else (hi if c > hi else c)
        sc = mul(sc, sqrt(ONE - k, 28), 28)
        self.sd_cap = sc if sc > _SDC_MIN else _SDC_MIN
        self.last_learned_mah = meas
        self.learned_mah = c
        self.cap_updates += 1
        self._set_capacity(self._at_temp(c))

    # ---- learned OCV points ------------------------------------------------
    def _ocv_reset(self):
        """Back to the bare table (a new chemistry, a reset by the user)."""
        sb = SIG_BIAS_W[self.chem]
        for j in range(OCV_PTS_MAX):
            self.ocv_off[j] = 0
            self.ocv_sd[j] = sb
        self._off = None
        self._ol_k = -1             # a step in progress learned the old table

    def _end_anchor(self, s, sd, end):
        """An end anchor: from here the count alone tells SOC (``_learn_point``)."""
        self._an_ok = True
        self._an_s = s
        self._an_sd = sd
        self._an_mah = 0
        self._an_ms = 0
        self._an_end = end

    def _sb_prior(self, chem, s):
        """The table-error prior at SOC ``s`` (W): the chemistry's, or a
        learned point's std where that is smaller (never below
        ``SB_LEARNED_MIN_W``)."""
        sb = SIG_BIAS_W[chem]
        if self._off is None:
            return sb
        j = ocv.seg_q28(chem, s)
        f = ocv.seg_pos_q28(chem, s, j)
        sl = _lerp(self.ocv_sd[j], self.ocv_sd[j + 1], f)
        if sl < SB_LEARNED_MIN_W:
            sl = SB_LEARNED_MIN_W
        return sl if sl < sb else sb

    def _learn_point(self, y, t2, chem):
        """Start learning the table near the count's SOC from the rested
        reading ``y`` (W, less R0*I and the RC voltage); ``_learn_work``
        does the rest.  A table error is a smooth curve (the estimator's
        table-error state decorrelates over 25 % of SOC), so the reading
        informs every breakpoint by its correlation with the reading's
        place, exp(-distance / 0.25): a Kalman update of each offset with its
        own std and that correlation (the learned points' posterior
        correlations are not kept).  Its noise is the count's own error since
        the end anchor seen through the slope and a rested reading's.  True
        if a measurement was taken."""
        cap = self.capacity_mah
        if cap <= 0 or self.cold_pm < 1000:
            return False
        sc = self._an_s + div(self._an_mah, cap, 28)
        if sc <= 0 or sc >= ONE:
            return False        # at an end: its anchor, not a table point
        dn = sc - self._an_s
        if dn < 0:
            dn = -dn
        if dn < _SPAN_MIN:
            # Near its anchor a rest measures the table against itself: a
            # CV-tail anchor's SOC came from the table there (its error is
            # the same table error, 25 % of SOC apart it is not).
            return False
        sdc = self._an_sd + mul(dn, _SIG_GAIN_Q30 + self.sd_cap, 28) + \
            div(div(self._an_ms, cap, 20), 72000, 10)
        sd = self.ocv_sd
        j = ocv.seg_q28(chem, sc)
        h = ocv.seg_slope_uv(chem, j, self._off)
        rc = mul(h, sdc, 23)
        if rc >= SIG_BIAS_W[chem]:
            return False        # the count knows SOC no better than the table
        f = ocv.seg_pos_q28(chem, sc, j)
        e = clamp(y - ocv.ocv_w(chem, sc, t2, self._off), SAT) >> 10
        # In U = W / 1024 (30 mV = 3750 U: the squares stay small ints).
        ss = _lerp(sd[j], sd[j + 1], f) >> 10   # prior std at sc
        if ss < 1:
            ss = 1
        r = hypot(rc, _OL_NOISE_W) >> 10
        self._ol_s = sc
        self._ol_j = j
        self._ol_f = f
        self._ol_ss = ss
        self._ol_g = div(ss * ss, ss * ss + r * r, 28)     # share of the innovation, Q28
        self._ol_a = mul(self._ol_g, clamp(e, 0x8000), 28)  # U
        self._ol_k = 0
        self._ol_try = 0
        return True

    def _learn_work(self, chem):
        """A share of a started learning step (``_learn_point``), so that no
        slow task carries all of it (emulated RP2040: ~1.6 ms per breakpoint,
        25 ms for LFP's 16 at once): each call computes ``OL_PER_CALL``
        points' correlations, new offsets and stds into scratch arrays; a
        last one checks that the moved table still keeps every segment's
        half rise (``soc_q28`` inverts it), then commits it.  A step that
        would fold the table is halved (the stds then stay: the reading was
        not taken in full), up to three times, or dropped.  The move of the
        table at the reading's SOC is taken out of the table-error state (it
        held the same error).  True when it committed this call."""
        n = ocv.row_len(chem)
        k = self._ol_k
        off = self.ocv_off
        sd = self.ocv_sd
        tmp = self._ol_tmp
        rh = self._ol_rho
        nsd = self._ol_sd
        if k < n:
            end = k + OL_PER_CALL
            if end > n:
                end = n
            while k < end:
                dk = div(ocv.row_pm(chem, k), 1000, 28) - self._ol_s
                rho = exp_neg(mul(-dk if dk < 0 else dk, 4, 4))
                rh[k] = rho
                self._ol_moved(k)
                nsd[k] = mul(sd[k], sqrt(ONE - mul(mul(rho, rho, 28), self._ol_g, 28), 28), 28)
                k += 1
            self._ol_k = k
            return False        # the check and the commit in a call of their own
        if not ocv.keeps_rise(chem, tmp):
            # It would fold: half the step, checked at the next call.
            self._ol_try += 1
            if self._ol_try > 3:
                self._ol_k = -1
                return False
            self._ol_a >>= 1
            for i in range(n):
                self._ol_moved(i)
            return False
        self._ol_k = -1
        j = self._ol_j
        mv = _lerp(tmp[j] - off[j], tmp[j + 1] - off[j + 1], self._ol_f)   # the move at sc
        whole = self._ol_try == 0
        for m in range(n):
            off[m] = tmp[m]
            if whole:
                sd[m] = nsd[m]
        self._off = off
        self.bias = clamp(self.bias - mv, _V_LIM)
        self.ocv_learned += 1
        self.ocv_dirty = True
        return True

    def _ol_moved(self, k):
        """Breakpoint ``k``'s offset after the step in progress (into the
        scratch array): its std times its correlation with the reading's
        place times the step (U), clamped."""
        sd = self.ocv_sd[k] >> 10
        self._ol_tmp[k] = clamp(self.ocv_off[k] + (
            mul(self._ol_rho[k], sd * self._ol_a // self._ol_ss, 28) << 10), _OFF_MAX_W)

    def get_ocv_points(self):
        """(chemistry, offsets W, stds W) of the learned points, for the store
        (the arrays themselves: copy before keeping)."""
        return self.chem, self.ocv_off, self.ocv_sd

    def ocv_offset_dmv(self, hi):
        """The highest (``hi``) or lowest learned offset in 0.1 mV (0: none)."""
        off = self.ocv_off
        v = off[0]
        for j in range(1, ocv.row_len(self.chem)):
            if (off[j] > v) if hi else (off[j] < v):
                v = off[j]
        return v // 12800 if v >= 0 else -(-v // 12800)

    def ocv_points_n(self):
        """Breakpoints of the present chemistry's table (the learned points in use)."""
        return ocv.row_len(self.chem)

    def set_ocv_points(self, chem, offs, sds):
        """Restore learned points; a wrong chemistry, length or value
        (beyond 60 mV, a std outside 0..prior, a table no longer
        increasing) drops them all: the bare table is safe, a wrong one is not."""
        if self._pver != self.params.version:
            self._refresh()
        n = ocv.row_len(self.chem)
        if chem != self.chem or len(offs) < n or len(sds) < n:
            return False
        sb = SIG_BIAS_W[self.chem]
        for j in range(n):
            if not (-_OFF_MAX_W <= offs[j] <= _OFF_MAX_W and 0 < sds[j] <= sb):
                return False
        if not ocv.keeps_rise(self.chem, offs):
            return False
        learned = False
        for j in range(n):
            self.ocv_off[j] = offs[j]
            self.ocv_sd[j] = sds[j]
            learned = learned or offs[j] != 0 or sds[j] != sb
        self._off = self.ocv_off if learned else None
        self._ol_k = -1
        return True

    def reset_ocv_points(self):
        """Forget the learned points (the user replaced or rebuilt the cells)."""
        self._ocv_reset()
        self.ocv_dirty = True

    # ---- persistence (settings store) ------------------------------------
    def get_state(self):
        """(soc_pm, remaining_mah, learned_mah, cycles, throughput_mah)."""
        return (self.soc_pm, self.remaining_mah, self.learned_mah, self.cycles,
                self.throughput_mah)

    def set_state(self, soc_pm, remaining_mah, learned_mah, cycles, throughput_mah):
        """Restore after a reboot; implausible parts are dropped, not trusted."""
        if self._pver != self.params.version:
            self._refresh()
        rated = self.rated_mah
        if learned_mah and rated and _LEARN_MIN_PM <= self._ratio_pm(learned_mah, rated) <= _LEARN_MAX_PM:
            self.learned_mah = learned_mah
            self.sd_cap = _SDC_RESTORED
            self._set_capacity(self._at_temp(learned_mah))
        if 0 <= cycles < 1000000:
            self.cycles = cycles
        if 0 <= throughput_mah < self.capacity_mah:
            self.throughput_mah = throughput_mah
        if 0 <= soc_pm <= 1000:
            self.set_pm(soc_pm)
            # The remaining charge is finer than per mille: use it if it agrees.
            if 0 <= remaining_mah <= self.capacity_mah and \
                    abs(self._ratio_pm(remaining_mah, self.capacity_mah) - soc_pm) <= 1:
                self.remaining_mah = remaining_mah
                self._update_pm()
        self._est_seen = False

    def save_to(self, st):
        """Fill an object with the settings store's State attribute names."""
        st.soc_pm = self.soc_pm
        st.remaining_mah = self.remaining_mah
        st.capacity_mah = self.learned_mah
        st.cycles = self.cycles
        st.throughput_mah = self.throughput_mah

    def load_from(self, st):
        self.set_state(st.soc_pm, st.remaining_mah, st.capacity_mah, st.cycles,
                       st.throughput_mah)

    # ---- estimator (slow task, integers, no allocation) ------------------
    def _r0_model(self, cap):
        """Model R0 at 25 degC in 1e-8 ohm for ``cap`` mAh (at least 0.1 Ah)."""
        if cap < 100:
            cap = 100
        return mul(div(R0_U_AH[self.chem], cap, 10), 1000, 10)

    def _r0_u(self, t2):
        """Mean-cell ohmic resistance in 1e-8 ohm at ``t2`` (learned if known)."""
        r = self.r0_learned
        if r <= 0:
            r = self._r0_model(self.rated_mah)
        return mul(r, _cold_q20(t2), 20) if t2 < 500 else r

    def r0_ohm(self, t_c=25.0):
        """Mean-cell ohmic resistance in ohm at ``t_c`` degC (float: tests and tools)."""
        return self._r0_u(int(t_c * 20.0)) * 1e-8

    def pause(self):
        """No estimator update this time (stale readings): the next one
        starts a fresh interval, as after invalid cell data."""
        self._est_seen = False

    def estimate(self, m, now):
        """One EKF step from the snapshot ``m``; returns False if skipped."""
        if self._pver != self.params.version:
            self._refresh()
        if not self.est_enabled or not m.cells_seen or not m.current_seen:
            return False
        n = m.n_cells - m.bad_cells
        if n <= 0 or m.bad_cells or m.sum_mv <= 0:
            self._est_seen = False
            return False
        t_lo = m.tmin[ROLE_CELL]
        t2 = 500 if t_lo == T_NONE_MIN else t_lo + m.tmax[ROLE_CELL]
        if t2 < -1000:
            t2 = -1000
        elif t2 > 3000:
            t2 = 3000
        self._cold_capacity(t2, self.chem)
        mv = m.sum_mv // n                  # mean cell voltage in W, not saturated:
        if mv >= 5000:                      # above any table: limit (keeps yb a small int)
            v = 5000 * W_PER_MV
        else:
            v = mv * W_PER_MV + (m.sum_mv - mv * n) * W_PER_MV // n   # 5 V = 6.4e8 < 2**30
        i = clamp(m.current_ma, SAT)
        s = self._frac()
        if not self._est_seen:
            self._est_seen = True
            self._prev_s = s
            self._prev_v = v
            self._prev_i = i
            self._prev_ms = now
            return False
        dt = ticks_diff(now, self._prev_ms)
        if dt <= 0:
            return False
        if dt > 60000:
            dt = 60000
        chem = self.chem
        cap = self.capacity_mah
        r0 = self._r0_u(t2)
        self._learn_r0(v, i, t2, cap)
        svc = self.service
        if svc is not None:
            svc()
        # --- predict: SOC moved by what the counter counted ---
        ds = s - self._prev_s
        ads = -ds if ds < 0 else ds
        if dt != self._dt:              # normally 1000 ms every time: computed once
            self._dt = dt
            self._a = exp_neg(div(dt, _TAU_MS, 24))
            sq = sqrt(dt << 14, 14)                 # sqrt(dt_ms), Q14
            self._fw = div(100, sq, 28)
            self._fl = div(_SQRT_T_LOAD_Q14, sq, 14)
        a = self._a
        oma = ONE - a
        # R0*I in W: (1e-8 ohm * mA) * 128 / 1e5
        yo = clamp(div(mul(r0, i, 10), 100000, 17), _V_LIM)
        r1i = mul(yo, _R1_FRAC_Q28, 28)
        v1 = clamp(mul(self.v1, a, 28) + mul(r1i, oma, 28), _V_LIM)
        # The table error belongs to a region of the curve: it fades to its
        # prior as SOC moves on (|ds| / 0.25, Q28 -> Q24) and slowly with time.
        rho = exp_neg(mul(ads, 4, 4) + div(dt, _T_BIAS_MS, 24))
        sb = self._sb_prior(chem, s)
        if t2 < 300:
            sb = mul(sb, div(500 - t2, 200, 20), 20)  # cold: OCV and relaxation less certain
        if self.sb_obs > sb:
            sb = self.sb_obs        # this pack's table is further off (see below)
        bias = clamp(mul(self.bias, rho, 28), _V_LIM)
        if self._cp_ms < _CP_MS_MAX:
            self._cp_ms += dt
        if self._an_ms < _CP_MS_MAX:
            self._an_ms += dt
        # Current-sensor bias: sd grows linearly, by 1 % of the net SOC
        # counted since the last reading that set sd0 (a gain error is a
        # scale factor on the counted charge: what a charge counts too much
        # the discharge back counts too little), plus the charge efficiency's
        # uncertainty on every charged unit, and by 0.05 A * dt / capacity
        # (Q30: dt * 2**30 / (cap * 72000)).
        sd0o = self.sd0
        # An unmeasured capacity adds to the gain error: an aged pack's SOC
        # drifts by its capacity error times the charge counted.  Only the
        # part above the learned floor: at 3 % per unit of SOC moved (gain +
        # floor) a real cell's knee 40-70 mV off the table pulled SOC back
        # across the top of the LFP plateau (PyBaMM LFP trace: 3 -> 7 %).
        sr0 = self._s_ref
        dn = s - sr0
        dp = self._prev_s - sr0
        dn = (-dn if dn < 0 else dn) - (-dp if dp < 0 else dp)   # |N| - |N_prev|, |dn| <= |ds|
        sd0 = sd0o + mul(dn, _SIG_GAIN_Q30 + self.sd_cap - _SDC_MIN, 28) + \
            div(div(dt, cap, 20), 72000, 10)
        if ds > 0:
            sd0 += mul(ds, _SIG_EFF_Q30, 28)
        if sd0 > _SD0_MAX:
            sd0 = _SD0_MAX
        elif sd0 < _SD0_MIN:
            sd0 = _SD0_MIN
        x1 = mul(a, self.sd1, 28)
        ar1 = -r1i if r1i < 0 else r1i
        sd1 = hypot(x1, hypot(mul(ar1, oma, 29), _SD1_FLOOR_W) if ar1 else _SD1_FLOOR_W)
        x2 = mul(rho, self.sd2, 28)
        sd2 = hypot(x2, mul(sqrt(ONE - mul(rho, rho, 28), 28), sb, 28))
        # Covariances a*p01, rho*p02, a*rho*p12 as correlations of the new stds.
        # (sd0 shrinks when the count returns toward its reference: the
        # covariances then shrink with it, correlations kept.)
        f0 = div(sd0o, sd0, 28) if sd0 > sd0o else ONE
        f1 = div(x1, sd1, 28)
        f2 = div(x2, sd2, 28)
        c01 = mul(mul(self.c01, f0, 28), f1, 28)
        c02 = mul(mul(self.c02, f0, 28), f2, 28)
        c12 = mul(mul(self.c12, f1, 28), f2, 28)
        if svc is not None:
            svc()
        # --- measurement noise (std, W) ---
        # White noise and the load-model error, each scaled by its
        # correlation time over the update period.  The RC pair's error
        # scales with the polarisation the current will build (R1*I: its R1
        # and tau are guesses), not with what the model has built so far,
        # which is ~0 right after a load step; after the load it is the
        # remaining relaxation v1.
        dyn = -v1 if v1 < 0 else v1
        if ar1 > dyn:
            dyn = ar1
        lq = hypot((-yo if yo < 0 else yo) >> 2, dyn >> 1)
        sr = hypot(mul(_SIG_WHITE_W, self._fw, 14), mul(lq, self._fl, 14))
        if sr < 1:
            sr = 1
        # --- update: mean cell voltage = OCV(s) + R0*I + v1 + bias ---
        # What OCV(s) should read: 0 < v <= 6.4e8 (5 V), |yo|, |v1|, |bias| <= _V_LIM
        # (1.34e8), so |yb| < 1.05e9 < 2**30.
        yb = v - yo - v1 - bias
        # Rest time, CV tail and the slope gate (module docstring).
        ai = -i if i < 0 else i
        if ai <= cap // 50:
            self.rest_ms = self.rest_ms + dt if self.rest_ms < _REST_LONG_MS else _REST_LONG_MS
        else:
            self.rest_ms = 0
        if self._tail(v, i, dt, cap, yo, r1i, t2, chem):
            return self._done(0, v, i, now)
        if svc is not None:
            svc()
        off = self._off
        started = False
        if self.rest_ms < _REST_LONG_MS:
            self._ol_rest = False
        elif not self._ol_rest and self._an_ok and _OL_T2_LO <= t2 <= _OL_T2_HI:
            # Relaxed, once per rest: a learned point (_learn_point).
            self._ol_rest = True
            started = self._learn_point(yb + bias, t2, chem)  # its work from the next update on
        if self._ol_k >= 0 and not started:
            # The reading was taken at rest: its step goes on if a load came since.
            b0 = self.bias
            if self._learn_work(chem):
                off = self._off
                d = b0 - self.bias      # the table's move at this SOC
                self.bias = b0
                bias = clamp(bias - d, _V_LIM)
                yb = v - yo - v1 - bias
        h0 = ocv.slope_uv(chem, s, off)
        if self._cp_ok and self.rest_ms >= _REST_LONG_MS and mul(h0, sd0, 23) < (sb >> 1):
            # Observed table error (module docstring): relaxed, and the
            # counter (since a trusted point) knows SOC better than the
            # table can tell it, so the reading less the bare table is this
            # pack's table error; within the table's range only.
            et = yb + bias
            if ocv.ocv_w(chem, 0, t2, off) < et < ocv.ocv_w(chem, ONE, t2, off):
                et = clamp(et - ocv.ocv_w(chem, s, t2, off), SAT)
                self.sb_obs += mul((-et if et < 0 else et) - self.sb_obs, div(dt, _T_SB_MS, 28), 28)
        hold = False
        if self._flat:
            self._lost = 0
        elif i > cap // 50 and v >= V_TAIL_MV[chem] * W_PER_MV:
            # Charging at the charge voltage region: the CV phase (module
            # docstring), counted until the tail anchor.
            self._lost = 0
            hold = True
        elif h0 < _H_GATE_UV:
            # Plateau: the counter alone, unless rested long and the table's
            # slope makes its error (sb / h in SOC) smaller than the counter's
            # own uncertainty: only then can the reading improve SOC.
            self._lost = 0
            hold = self.rest_ms < _REST_LONG_MS or mul(h0, sd0, 23) < sb
            if hold:
                self.gated += 1
        elif self.rest_ms > 0:
            # At rest on a slope, against the table alone (not the table-error
            # state, which would soon absorb it): more than 3 sigma of SOC,
            # table and noise means the set / restored SOC is wrong.  The
            # update waits while this lasts (absorbing it would park most of
            # it in the table-error state); after _LOST_N readings SOC starts
            # again from the table.
            e0 = clamp(yb + bias - ocv.ocv_w(chem, s, t2, off), SAT)
            lim = hypot(hypot(mul(h0, sd0, 23), sb), sr)
            if lim < SAT // 3 and (e0 > 3 * lim or e0 < -3 * lim):
                self._lost += 1
                hold = True
                if self._lost >= _LOST_N:
                    self._lost = 0
                    self._flat = _FLAT_LOST  # a restart, after a minute's rest
                    self.resets += 1
                    hold = False
                    bias = 0
                    yb = v - yo - v1
                    sd1 = _SD1_INIT
                    sd2 = sb
                    c12 = 0
            else:
                self._lost = 0
        else:
            self._lost = 0
        if hold:
            self.v1 = v1
            self.bias = bias
            self.sd0 = sd0
            self.sd1 = sd1
            self.sd2 = sd2
            self.c01 = c01
            self.c02 = c02
            self.c12 = c12
            return self._done(clamp(yb - ocv.ocv_w(chem, s, t2, off), SAT), v, i, now)
        if self._flat:
            boot = self._flat == _FLAT_BOOT
            self._flat = _FLAT_NO
            self.v1 = v1
            self.bias = bias
            self.sd1 = sd1
            self.sd2 = sd2
            self.c12 = c12
            e = self._flat_update(yb, chem, t2, sr)
            if boot and self.rest_ms:
                # Boot without stored state, no current: the relays were
                # open while the BMS was off, so the cells have rested.  SOC
                # is the reading alone, with its honest std: a trusted point
                # for the capacity (the learner weighs it by that std).
                self._trusted(self._frac(), self.sd0, True)
            return self._done(e, v, i, now)
        # Iterated EKF: the OCV table is piecewise linear and a large SOC
        # error spans several segments, so one linearisation at the prior
        # SOC puts the wrong share of the innovation into v1 and the
        # table-error state, where it stays for hours on the LFP plateau.
        # Relinearising at the updated SOC (Gauss-Newton on the same prior)
        # removes that; it converges in 1-3 passes.
        # In normalised coordinates z_j = x_j / sd_j: H_z = (h*sd0, sd1, sd2),
        # ph = C H_z, sv = H_z' C H_z + R, gain_j = ph_j / sv (per W), and
        # the covariance update is C - ph ph' / sv.
        si = s
        v1i = v1
        bi = bias
        e = 0
        ph0 = ph1 = ph2 = 0
        kz0 = kz1 = kz2 = 0
        k = 0
        jp = -1
        for _ in range(IEKF_PASSES):
            j = ocv.seg_q28(chem, si)
            if j == jp:
                # Still on the segment of the last pass: the table is linear
                # there, so this pass would repeat the last one exactly.
                break
            jp = j
            h = ocv.seg_slope_uv(chem, j, off)
            o = ocv.ocv_w(chem, si, t2, off)
            # Innovation of the linearisation at si seen from the prior
            # (v1 and bias enter linearly: their iterates cancel).
            e = clamp(yb - o, SAT) - clamp(mul(h, s - si, 21), SAT)
            # One power-of-two scale 2**k for this update's voltage terms.
            z0 = mul(h, sd0, 23)     # h * sd0 in W (uV/unit * Q30 -> W)
            mx = z0
            if sd1 > mx:
                mx = sd1
            if sd2 > mx:
                mx = sd2
            if sr > mx:
                mx = sr
            k = 0
            while mx >= 0x800000:
                mx >>= 1
                k += 1
            while mx < 0x400000:
                mx <<= 1
                k -= 1
            z0 = mul(h, sd0, 23 + k)
            if k >= 0:
                z1 = sd1 >> k
                z2 = sd2 >> k
                zr = sr >> k
            else:
                z1 = sd1 << -k
                z2 = sd2 << -k
                zr = sr << -k
            # |z| < 2**23, |c| <= 1: |ph| < 3 * 2**23, each product < 3 * 2**26
            ph0 = z0 + mul(c01, z1, 28) + mul(c02, z2, 28)
            ph1 = mul(c01, z0, 28) + z1 + mul(c12, z2, 28)
            ph2 = mul(c02, z0, 28) + mul(c12, z1, 28) + z2
            sv = mul(z0, ph0, 20) + mul(z1, ph1, 20) + mul(z2, ph2, 20) + mul(zr, zr, 20)
            if sv < 1:
                sv = 1
            # ph / sv (per scaled W) = kz * 2**-(44 + k) per W.
            kz0 = div(ph0, sv, 24)
            kz1 = div(ph1, sv, 24)
            kz2 = div(ph2, sv, 24)
            # Normalised corrections kz * e in Q18 (standard deviations),
            # times the std of each state.
            sn = s + mul(mul(kz0, e, 26 + k), sd0, 20)
            if sn < 0:
                sn = 0
            elif sn > ONE:
                sn = ONE
            v1i = clamp(v1 + mul(mul(kz1, e, 26 + k), sd1, 18), _V_LIM)
            bi = clamp(bias + mul(mul(kz2, e, 26 + k), sd2, 18), _V_LIM)
            d = sn - si
            si = sn
            if -_CONV_Q28 < d < _CONV_Q28:
                break
        # C - ph ph' / sv (Q28: ph_i * kz_j * 2**-44 * 2**28), then back to
        # standard deviations and correlations.
        d0 = ONE - mul(ph0, kz0, 16)
        d1 = ONE - mul(ph1, kz1, 16)
        d2 = ONE - mul(ph2, kz2, 16)
        c01 -= mul(ph0, kz1, 16)
        c02 -= mul(ph0, kz2, 16)
        c12 -= mul(ph1, kz2, 16)
        q0 = sqrt(d0 if d0 > _D_MIN_Q28 else _D_MIN_Q28, 28)
        q1 = sqrt(d1 if d1 > _D_MIN_Q28 else _D_MIN_Q28, 28)
        q2 = sqrt(d2 if d2 > _D_MIN_Q28 else _D_MIN_Q28, 28)
        sd0 = mul(sd0, q0, 28)
        self.sd0 = sd0 if sd0 > _SD0_MIN else _SD0_MIN
        self.sd1 = mul(sd1, q1, 28)
        self.sd2 = mul(sd2, q2, 28)
        self.c01 = clamp(div(c01, mul(q0, q1, 28), 28), ONE)
        self.c02 = clamp(div(c02, mul(q0, q2, 28), 28), ONE)
        self.c12 = clamp(div(c12, mul(q1, q2, 28), 28), ONE)
        self.bias = bi
        self.v1 = v1i
        self._apply(si - s)
        # The counter's error since the reference (a gain or capacity error
        # times the net SOC counted) shrank with sd0 by q0: so does its
        # distance to the reference.  A reading that sets SOC (q0 ~ 0) moves
        # the reference here; one under load that hardly informs SOC leaves
        # it, so a charge back toward a trusted point (knee, rest) finds the
        # counter as sure of SOC as it was there, and the voltage, through a
        # table that may be off by tens of mV, pulls it only that much.
        # (Corrections shift the reference with SOC; |N| is kept within one
        # full span, so the reference stays within -1..2 in Q28.)
        self._s_ref = self._frac() - clamp(mul(q0, s - sr0, 28), ONE)
        if self.sd0 <= _SD_TRUST and self.rest_ms >= _REST_MS:
            # Rested (relaxed) and known to 2 %: the reading, not the
            # counter, set this SOC (under load the posterior leans on the
            # count, and a capacity measured from it learns its own guess).
            self._trusted(self._frac(), self.sd0, True)
        return self._done(e, v, i, now)

    def _tail(self, v, i, dt, cap, yo, r1i, t2, chem):
        """CV-tail anchor: True if it set SOC this update."""
        if i <= 0 or i > cap // 15 or v < V_TAIL_MV[chem] * W_PER_MV:
            if i < -(cap // 10):
                self._tail_armed = True     # a real discharge: the next charge may anchor
            self._tail_ms = 0
            return False
        if self._tail_ms < _TAIL_MS:
            self._tail_ms += dt
        if self._tail_ms < _TAIL_MS or not self._tail_armed:
            return False
        self._tail_armed = False
        # The tapering current has let the RC pair settle at R1*I: the rested
        # voltage is the reading less R0*I and R1*I, on the steep top of the
        # table where its error is a small SOC error.
        off = self._off
        sa = ocv.soc_q28(chem, v - yo - r1i, t2, off)
        h = ocv.slope_uv(chem, sa, off)
        sb = self._sb_prior(chem, sa)
        if self.sb_obs > sb:
            sb = self.sb_obs
        sd = div(sb, h, 23) if h > 0 else _SD0_RESTORED
        if sd < _SD0_CAL:
            sd = _SD0_CAL
        elif sd > _SD0_RESTORED:
            sd = _SD0_RESTORED
        c02 = 0
        if not self._flat:
            # A reading, to sd: it pulls SOC only as far as its uncertainty
            # against the counter's allows (the Kalman combination of two
            # estimates; on LFP's steep top the anchor all but sets SOC).
            s0 = self._frac()
            f = div(self.sd0, hypot(self.sd0, sd), 28)
            sa = s0 + mul(mul(f, f, 28), sa - s0, 28)
            sd = mul(sd, f, 28)
            if sd < _SD0_MIN:
                sd = _SD0_MIN
            # The combined SOC is off by the share f**2 of the table's error
            # here / slope: correlated with the table-error state by f.
            c02 = f
        learned = self._anchor_event(1, sa)
        self._set_q28(sa)
        self._flat = _FLAT_NO
        self.sd0 = sd
        self._s_ref = self._frac()
        self.c01 = 0
        self.c02 = c02
        self.v1 = r1i
        # SOC is now the table's at this voltage, to sd = table error /
        # slope: the table-error state starts again from its prior (kept,
        # it would pull SOC back by its value at the next update).
        self.bias = 0
        self.sd2 = sb
        self.c12 = 0
        self._lost = 0
        self._trusted(sa, sd, not learned, 1)
        self._end_anchor(sa, sd, 1)
        self.cal_tail += 1
        return True

    def _done(self, e, v, i, now):
        """Bookkeeping after an update with innovation ``e`` (W)."""
        self.innovation_mv = e // W_PER_MV if e >= 0 else -(-e // W_PER_MV)
        self.est_updates += 1
        self._prev_s = self._frac()
        self._prev_v = v
        self._prev_i = i
        self._prev_ms = now
        return True

    def _flat_update(self, y, chem, t2, sr):
        """First update after a boot without stored state: SOC from the table.

        With no SOC information the prior is flat, not a wide Gaussian: a
        50 % sigma on the LFP plateau (0.12 V per unit SOC) is only ~60 mV,
        so the Kalman gain handed the RC and table-error states a few % of
        the first innovation (tens of mV off the start value), ~0.6 mV that
        on the plateau reads as 0.5 % SOC for minutes while it decays.  The
        limit p00 -> infinity of the same update is exact and cheap: SOC is
        the table's inverse of the reading ``y`` (minus R0*I and the RC and
        table states' prior means), those states keep their priors, and the
        SOC variance is what they and the reading noise leave, seen through
        the local slope: N**2 / h**2 with N**2 = p11 + 2*p12 + p22 + r, and
        SOC correlated to v1 by -(sd1 + c12*sd2) / N, to the table error by
        -(sd2 + c12*sd1) / N.
        """
        sd1 = self.sd1
        sd2 = self.sd2
        c12 = self.c12
        off = self._off
        sn = ocv.soc_q28(chem, y, t2, off)
        o = ocv.ocv_w(chem, sn, t2, off)
        h = ocv.slope_uv(chem, sn, off)
        # var(v1 + bias) = (sd1 + c12*sd2)**2 + (1 - c12**2) * sd2**2
        u = sd1 + mul(c12, sd2, 28)
        nn = hypot(hypot(u, mul(sqrt(ONE - mul(c12, c12, 28), 28), sd2, 28)), sr)
        sd0 = div(nn, h, 23)        # W / (uV per unit SOC) -> Q30
        if sd0 > _SD0_MAX:
            sd0 = _SD0_MAX
        elif sd0 < _SD0_MIN:
            sd0 = _SD0_MIN
        self.sd0 = sd0
        self.c01 = clamp(-div(u, nn, 28), ONE)
        self.c02 = clamp(-div(sd2 + mul(c12, sd1, 28), nn, 28), ONE)
        self._set_q28(sn)
        self._s_ref = self._frac()
        return clamp(y - o, SAT)

    def _apply(self, d):
        """Add ``d`` (Q28 fraction of capacity) to the counter as whole mAh + mA*ms."""
        cap = self.capacity_mah
        whole = mul(d, cap, 28)
        left = d - div(whole, cap, 28)          # the part below one mAh, Q28
        r = self._res + mul(mul(left, cap, 14), MAH_MS, 14)
        carry = r // MAH_MS
        self._res = r - carry * MAH_MS
        rem = self.remaining_mah + whole + carry
        if rem < 0:
            rem = 0
            self._res = 0
        elif rem >= cap:
            rem = cap
            self._res = 0
        self.remaining_mah = rem
        self._update_pm()

    def _learn_r0(self, v, i, t2, cap):
        """R0 from a current step between two readings 1 s apart (dV/dI)."""
        di = i - self._prev_i
        if -((cap + 9) // 10) < di < (cap + 9) // 10:
            return      # below 0.1 C
        # W per mA = 7.8125e-6 ohm = 781.25 * 1e-8 ohm
        r = mul(div(v - self._prev_v, di, 16), 3125, 18)
        if t2 < 500:
            r = div(r, _cold_q20(t2), 20)
        base = self._r0_model(cap)
        if r < base * 3 // 10 or r > base * 3:
            return  # a load that changed again between the readings
        cur = self.r0_learned
        self.r0_learned = r if cur <= 0 else cur + (r - cur) // 8
