"""Two LFP packs the BMS cannot tell apart on the plateau (issue 20, the
"table 5 / 10 mV off" rows).

Pack A: the cells' OCV curve ``shift`` mV above the firmware's table, at
60 % (the bench's "LFP OCV +5 mV" day).  Pack B: the table exact, at the SOC
whose OCV is ``shift`` mV above that of 60 %.  Same currents, sensor errors
and fresh boot.  Until a knee or a full anchor the BMS sees the same
voltages and the same counted charge from both, so it gives the same
estimate, while their true SOCs differ by ``shift`` / slope: any estimator's
worse error of the two is at least half that difference.

    python -m tools.bench.soc_twins 5 3
"""
import sys

from tools.bench.soc_profile import Day
from tools.sim import pack as packmod


def twins(shift, hours=3.0, start=0.6):
    s_b = packmod.soc_at_ocv("LFP", packmod.ocv("LFP", start) + shift / 1000.0)
    kw = dict(cells=8, soc_bms=0.8, gain=1.01, offset_ma=50)
    a = Day("LFP", soc_true=start, ocv_shift_mv=shift, **kw).run(hours=hours, sample_s=60)
    b = Day("LFP", soc_true=s_b, **kw).run(hours=hours, sample_s=60)
    w = [(x, y) for x, y in zip(a, b) if x[0] >= 1.0]
    return {
        "twin_start": s_b,
        "est_diff": max(abs(x[1] - y[1]) for x, y in w),
        "true_diff": max(abs(x[2] - y[2]) for x, y in w),
        "err_shifted": max(abs(x[1] - x[2]) for x, _ in w),
        "err_twin": max(abs(y[1] - y[2]) for _, y in w),
    }


def main(argv):
    shift = float(argv[1]) if len(argv) > 1 else 5.0
    hours = float(argv[2]) if len(argv) > 2 else 3.0
    r = twins(shift, hours)
    print("shift %+g mV: twin (table exact) starts at %.3f; 1-%g h: estimates differ by <= %.2f %%, "
          "true SOCs by %.2f %%; max error: shifted %.2f %%, twin %.2f %%" % (
              shift, r["twin_start"], hours, r["est_diff"] * 100, r["true_diff"] * 100,
              r["err_shifted"] * 100, r["err_twin"] * 100))


if __name__ == "__main__":
    main(sys.argv)
