"""Slave-module firmware: the module logic (``slave.core``), its AFE adapter
(``slave.afe``) and the firmware-update receiver (``slave.fw``), run by the
board entry ``slave_main.py``.  It uses ``bms`` (pure logic) and ``comms``
(the internal CAN protocol); the master firmware never imports it."""
