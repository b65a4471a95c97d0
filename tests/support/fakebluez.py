# dbus-fast reads each method's and property's D-Bus signature from its annotations: the
# `Annotated[<python type>, DBusSignature("...")]` aliases below give it the signature and
# give mypy the Python type.
"""A fake `org.bluez` on a private D-Bus, so bleak's real BlueZ backend can be tested.

Only the radio is fake. bleak connects to the bus named by DBUS_SYSTEM_BUS_ADDRESS exactly as
it does on a Pi, calls GetManagedObjects, SetDiscoveryFilter, StartDiscovery (active) or
RegisterMonitor (passive), and receives InterfacesAdded / PropertiesChanged /
InterfacesRemoved signals for devices. Every call the fake receives is recorded so tests can
assert on the conversation, and the fake can stop reporting or vanish to exercise recovery.
"""

import asyncio
import os
import shutil
import subprocess
import tempfile
from pathlib import Path
from typing import Annotated, Any

from dbus_fast import BusType, PropertyAccess, Variant
from dbus_fast.aio import MessageBus
from dbus_fast.annotations import DBusBool, DBusDict, DBusInt16, DBusObjectPath, DBusStr
from dbus_fast.annotations import DBusSignature as Sig
from dbus_fast.service import ServiceInterface, dbus_method, dbus_property

DBusStrList = Annotated[list[str], Sig("as")]
DBusManufacturerData = Annotated[dict[int, Variant], Sig("a{qv}")]

BUS_CONFIG = """<!DOCTYPE busconfig PUBLIC "-//freedesktop//DTD D-Bus Bus Configuration 1.0//EN"
 "http://www.freedesktop.org/standards/dbus/1.0/busconfig.dtd">
<busconfig>
  <type>custom</type>
  <listen>unix:path={socket}</listen>
  <auth>EXTERNAL</auth>
  <policy context="default">
    <allow user="*"/>
    <allow own="*"/>
    <allow send_type="method_call"/>
    <allow send_type="signal"/>
    <allow send_type="method_return"/>
    <allow send_type="error"/>
    <allow receive_type="method_call"/>
    <allow receive_type="signal"/>
    <allow receive_type="method_return"/>
    <allow receive_type="error"/>
  </policy>
</busconfig>
"""


class PrivateBus:
    """A dbus-daemon of our own, standing in for the system bus."""

    def __init__(self) -> None:
        daemon = shutil.which("dbus-daemon")
        if daemon is None:
            raise RuntimeError(
                "dbus-daemon is not installed: scripts/test installs it (Debian package "
                "dbus-daemon); or run: apt-get install dbus-daemon"
            )
        self.dir = Path(tempfile.mkdtemp(prefix="fake-bluez-"))
        socket = self.dir / "bus"
        conf = self.dir / "bus.conf"
        conf.write_text(BUS_CONFIG.format(socket=socket))
        self.proc = subprocess.Popen(
            [daemon, f"--config-file={conf}", "--nofork", "--print-address"],
            stdout=subprocess.PIPE,
            text=True,
        )
        assert self.proc.stdout is not None
        self.address = self.proc.stdout.readline().strip()
        if not self.address:
            raise RuntimeError("dbus-daemon did not start")

    def close(self) -> None:
        self.proc.terminate()
        self.proc.communicate(timeout=5)  # waits, and closes the stdout pipe
        shutil.rmtree(self.dir, ignore_errors=True)


class Adapter(ServiceInterface):
    def __init__(self, fake: "FakeBlueZ", name: str) -> None:
        super().__init__("org.bluez.Adapter1")
        self.fake = fake
        self.adapter = name
        self._powered = True
        self._discovering = False

    @dbus_method()
    def StartDiscovery(self) -> None:
        self.fake.calls.append((self.adapter, "StartDiscovery"))
        self._discovering = True
        self.emit_properties_changed({"Discovering": True})

    @dbus_method()
    def StopDiscovery(self) -> None:
        self.fake.calls.append((self.adapter, "StopDiscovery"))
        self._discovering = False
        self.emit_properties_changed({"Discovering": False})

    @dbus_method()
    def SetDiscoveryFilter(self, properties: DBusDict) -> None:
        self.fake.calls.append((self.adapter, "SetDiscoveryFilter"))
        self.fake.discovery_filters.append({k: v.value for k, v in properties.items()})

    @dbus_property(access=PropertyAccess.READ)
    def Address(self) -> DBusStr:
        return "00:1A:7D:DA:71:13"

    @dbus_property(access=PropertyAccess.READ)
    def Alias(self) -> DBusStr:
        return self.adapter

    @dbus_property()
    def Powered(self) -> DBusBool:
        return self._powered

    # mypy knows the getter/setter pair only for the builtin `property`, not for its
    # dbus-fast subclass, which needs both under the one name.
    @Powered.setter  # type: ignore[no-redef]
    def Powered(self, value: DBusBool) -> None:
        self.fake.calls.append((self.adapter, f"Powered={value}"))
        self._powered = value
        self.emit_properties_changed({"Powered": value})

    @dbus_property(access=PropertyAccess.READ)
    def Discovering(self) -> DBusBool:
        return self._discovering

    @dbus_property(access=PropertyAccess.READ)
    def Roles(self) -> DBusStrList:
        return ["central", "peripheral"]


class MonitorManager(ServiceInterface):
    def __init__(self, fake: "FakeBlueZ", name: str) -> None:
        super().__init__("org.bluez.AdvertisementMonitorManager1")
        self.fake = fake
        self.adapter = name

    @dbus_method()
    def RegisterMonitor(self, application: DBusObjectPath) -> None:
        self.fake.calls.append((self.adapter, "RegisterMonitor"))

    @dbus_method()
    def UnregisterMonitor(self, application: DBusObjectPath) -> None:
        self.fake.calls.append((self.adapter, "UnregisterMonitor"))

    @dbus_property(access=PropertyAccess.READ)
    def SupportedMonitorTypes(self) -> DBusStrList:
        return ["or_patterns"]

    @dbus_property(access=PropertyAccess.READ)
    def SupportedFeatures(self) -> DBusStrList:
        return []


class Device(ServiceInterface):
    def __init__(self, adapter_path: str, address: str, rssi: int) -> None:
        super().__init__("org.bluez.Device1")
        self.adapter_path = adapter_path
        self.address = address
        self.rssi = rssi
        self.manufacturer: dict[int, bytes] = {}
        self.service: dict[str, bytes] = {}

    @dbus_property(access=PropertyAccess.READ)
    def Address(self) -> DBusStr:
        return self.address

    @dbus_property(access=PropertyAccess.READ)
    def AddressType(self) -> DBusStr:
        return "random"

    @dbus_property(access=PropertyAccess.READ)
    def Alias(self) -> DBusStr:
        return self.address.replace(":", "-")

    @dbus_property(access=PropertyAccess.READ)
    def Adapter(self) -> DBusObjectPath:
        return self.adapter_path

    @dbus_property(access=PropertyAccess.READ)
    def RSSI(self) -> DBusInt16:
        return self.rssi

    @dbus_property(access=PropertyAccess.READ)
    def ManufacturerData(self) -> DBusManufacturerData:
        return {k: Variant("ay", v) for k, v in self.manufacturer.items()}

    @dbus_property(access=PropertyAccess.READ)
    def ServiceData(self) -> DBusDict:
        return {k: Variant("ay", v) for k, v in self.service.items()}

    @dbus_property(access=PropertyAccess.READ)
    def UUIDs(self) -> DBusStrList:
        return list(self.service)

    @dbus_property(access=PropertyAccess.READ)
    def Connected(self) -> DBusBool:
        return False

    @dbus_property(access=PropertyAccess.READ)
    def Paired(self) -> DBusBool:
        return False


class FakeBlueZ:
    """The fake daemon. Start it inside the test's event loop."""

    def __init__(self, address: str, adapters: tuple[str, ...] = ("hci0",)) -> None:
        self.address = address
        self.adapter_names = adapters
        self.calls: list[tuple[str, str]] = []
        self.discovery_filters: list[dict[str, Any]] = []
        self.devices: dict[str, Device] = {}
        self.bus: MessageBus | None = None

    async def start(self) -> None:
        self.bus = await MessageBus(bus_address=self.address, bus_type=BusType.SYSTEM).connect()
        for name in self.adapter_names:
            path = f"/org/bluez/{name}"
            self.bus.export(path, Adapter(self, name))
            self.bus.export(path, MonitorManager(self, name))
        await self.bus.request_name("org.bluez")

    def stop(self) -> None:
        """bluetoothd dies: the name is gone and nobody answers."""
        if self.bus is not None:
            self.bus.disconnect()
            self.bus = None
        self.devices.clear()

    @staticmethod
    def device_path(adapter: str, address: str) -> str:
        return f"/org/bluez/{adapter}/dev_{address.replace(':', '_')}"

    def advertise(
        self,
        address: str,
        rssi: int,
        manufacturer: dict[int, bytes] | None = None,
        service: dict[str, bytes] | None = None,
        adapter: str = "hci0",
    ) -> None:
        """A device is heard: InterfacesAdded the first time, PropertiesChanged after."""
        assert self.bus is not None
        path = self.device_path(adapter, address)
        device = self.devices.get(path)
        if device is None:
            device = Device(f"/org/bluez/{adapter}", address, rssi)
            device.manufacturer = dict(manufacturer or {})
            device.service = dict(service or {})
            self.devices[path] = device
            self.bus.export(path, device)
            return
        changed: dict[str, Any] = {"RSSI": rssi}
        device.rssi = rssi
        if manufacturer is not None:
            device.manufacturer = dict(manufacturer)
            changed["ManufacturerData"] = {k: Variant("ay", v) for k, v in manufacturer.items()}
        if service is not None:
            device.service = dict(service)
            changed["ServiceData"] = {k: Variant("ay", v) for k, v in service.items()}
        device.emit_properties_changed(changed)

    def remove(self, address: str, adapter: str = "hci0") -> None:
        assert self.bus is not None
        path = self.device_path(adapter, address)
        if self.devices.pop(path, None) is not None:
            self.bus.unexport(path)


async def wait_for(condition: Any, timeout: float = 10.0, step: float = 0.02) -> None:
    """Poll `condition()` until true (event-driven code under test, no fixed sleeps)."""
    deadline = asyncio.get_running_loop().time() + timeout
    while not condition():
        if asyncio.get_running_loop().time() > deadline:
            raise TimeoutError("condition not met in time")
        await asyncio.sleep(step)


def use_bus(address: str) -> None:
    os.environ["DBUS_SYSTEM_BUS_ADDRESS"] = address
