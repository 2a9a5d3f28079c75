"""CPython stand-in for MicroPython's built-in ``micropython`` module.

Only the host puts this directory on ``sys.path``; on a board (and under the
``micropython`` unix binary) the real built-in module is used instead.
"""


def const(value):
    return value


def native(fn):
    return fn


def viper(fn):
    return fn


def heap_lock():
    return 0


def heap_unlock():
    return 0


def mem_info(*_args):
    return None
