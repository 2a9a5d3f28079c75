"""The register blocks of the Modbus map, one small module each.

``comms.registers.BLOCKS`` lists them: name, start address, size, a short
description and the module that serves the block, named after the block
(``comms.regs.<name>``).  A block module has

    read(rm, off, count, out, pos)     fill ``count`` big-endian registers
                                       from block offset ``off`` into
                                       ``out[pos:]``; returns an exception
                                       code (``codes.EX_*``; EX_NONE)
    write(rm, off, count, data, pos)   apply ``count`` registers from
                                       ``data[pos:]``; returns an exception
                                       code, refusals through ``rm.refuse``
                                       (``codes.read_only`` for a read-only
                                       block)
    SIZE                               its size in registers (a literal
                                       copy sits in BLOCKS; a test checks it)
    doc(start)                         host only (tools/gendocs.py): section
                                       title, markdown, CSV rows

``rm`` is the port's ``comms.registers.RegisterMap`` (the Bms, auth,
channel, device info, last-error registers, window sources).  Blocks never
import ``comms.registers``: the map imports a block by its name the first
time a request touches it, so a block nobody reads costs no RAM.  Reads of
the blocks a monitor polls must not allocate; writes are rare and may.
Module-level tables are compile-time constants (test_const_tables).

A new block: one module here, one row in ``BLOCKS``.
"""
