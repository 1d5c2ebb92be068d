#!/usr/bin/env python3
"""Modbus devices served by pymodbus, an implementation independent of ours,
for bess-edge's interoperability tests.

    pymodbus_device.py tcp PORT   Modbus TCP on 127.0.0.1:PORT
    pymodbus_device.py rtu        Modbus RTU on a pseudo-terminal; prints
                                  "rtu-port /dev/pts/N" (the client's end)

Unit 1: a vendor device with CDAB ("word swapped") floats and integers,
"not implemented" markers, a string and a status word:
    0-1   f32 CDAB   12.375
    2-3   i32 CDAB   -123456
    4     u16        0xFFFF (not implemented)
    5     i16        0x8000 (not implemented)
    6     u16        0b10001 (status: bits 0 and 4)
    10-13 string     "PYMB-01"
    20    u16        4242
Unit 2: a SunSpec device: "SunS" at 40000, models 1, 103 and 802, end.
Registers outside the defined blocks answer exception 2.
"""

import asyncio
import logging
import os
import struct
import sys
import threading
import tty

from pymodbus.datastore import (
    ModbusDeviceContext,
    ModbusServerContext,
    ModbusSparseDataBlock,
)

logging.basicConfig(level=logging.ERROR)


def f32_cdab(value):
    hi, lo = struct.unpack(">HH", struct.pack(">f", value))
    return [lo, hi]


def i32_cdab(value):
    hi, lo = struct.unpack(">HH", struct.pack(">i", value))
    return [lo, hi]


def text(s, registers):
    raw = s.encode().ljust(registers * 2, b"\0")
    return list(struct.unpack(">%dH" % registers, raw))


def vendor_device():
    regs = {}

    def put(address, words):
        for i, w in enumerate(words):
            regs[address + i] = w

    put(0, f32_cdab(12.375))
    put(2, i32_cdab(-123456))
    put(4, [0xFFFF, 0x8000, 0b10001])
    put(10, text("PYMB-01", 4))
    put(20, [4242])
    return regs


def sunspec_device():
    words = [0x5375, 0x6E53]
    common = text("PyModbus", 16) + text("Peer Inverter", 16) + text("", 8) + text("1.0", 8) + text("SN-0042", 16) + [1, 0x8000]
    words += [1, len(common)] + common
    inverter = [0] * 50
    inverter[0] = 123  # A
    inverter[4] = 0xFFFF  # A_SF = -1
    inverter[12] = 1234  # W
    inverter[13] = 0xFFFF  # W_SF = -1
    inverter[14] = 5001  # Hz
    inverter[15] = 0xFFFE  # Hz_SF = -2
    inverter[16] = 0x8000  # VA: not implemented
    words += [103, 50] + inverter
    battery = [0] * 62
    battery[9] = 8460  # SoC
    battery[54] = 0xFFFE  # SoC_SF = -2
    battery[32] = 7123  # V
    battery[57] = 0xFFFF  # V_SF = -1
    words += [802, 62] + battery
    words += [0xFFFF, 0]
    return {40000 + i: w for i, w in enumerate(words)}


def context():
    devices = {}
    for unit, regs in ((1, vendor_device()), (2, sunspec_device())):
        block = ModbusSparseDataBlock(dict(regs))
        devices[unit] = ModbusDeviceContext(hr=block, ir=block)
    return ModbusServerContext(devices=devices, single=False)


def relay(a, b):
    """Copy bytes from fd a to fd b until either closes."""
    try:
        while True:
            data = os.read(a, 4096)
            if not data:
                return
            os.write(b, data)
    except OSError:
        return


async def main():
    from pymodbus.server import StartAsyncSerialServer, StartAsyncTcpServer
    from pymodbus.framer import FramerType

    mode = sys.argv[1]
    if mode == "tcp":
        port = int(sys.argv[2])
        print("ready", flush=True)
        await StartAsyncTcpServer(context=context(), address=("127.0.0.1", port))
    elif mode == "rtu":
        # Two pseudo-terminals joined back to back: the server opens one
        # slave end, the client the other, like a null-modem cable. Linux
        # pseudo-terminals refuse parity settings, so the line is 8N1.
        m1, s1 = os.openpty()
        m2, s2 = os.openpty()
        for fd in (s1, s2):
            tty.setraw(fd)
        threading.Thread(target=relay, args=(m1, m2), daemon=True).start()
        threading.Thread(target=relay, args=(m2, m1), daemon=True).start()
        print("rtu-port", os.ttyname(s2), flush=True)
        await StartAsyncSerialServer(
            context=context(), framer=FramerType.RTU, port=os.ttyname(s1), baudrate=19200, parity="N", stopbits=1, bytesize=8
        )
    else:
        sys.exit("usage: pymodbus_device.py tcp PORT | rtu")


if __name__ == "__main__":
    asyncio.run(main())
