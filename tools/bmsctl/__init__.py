"""bmsctl: PC tool for the MicroPython BMS (RS485 Modbus RTU)."""
