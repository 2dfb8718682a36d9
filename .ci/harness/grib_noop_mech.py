"""ML2 mechanism driver for the test cloud: binds ports without any L2 agent.

The test cloud has no data plane (no OVS, no linuxbridge, no OVN). Without a
binding driver every port stays ``binding_failed`` and Nova refuses to boot.
This driver binds every normal vNIC port on every host and marks it ACTIVE.
The guests the test virt driver boots use qemu's own user-mode network, so
nothing is ever plugged. Loaded by neutron-server through the entry point
``grib_noop`` declared in grib_noop_mech-1.0.dist-info/entry_points.txt.
"""

from neutron_lib.api.definitions import portbindings
from neutron_lib import constants
from neutron_lib.plugins.ml2 import api


class NoopBindingDriver(api.MechanismDriver):
    """Binds any normal port on the first segment, as vif_type ovs."""

    def initialize(self):
        pass

    @property
    def connectivity(self):
        return portbindings.CONNECTIVITY_L2

    def bind_port(self, context):
        vnic = context.current.get(portbindings.VNIC_TYPE)
        if vnic not in (None, portbindings.VNIC_NORMAL):
            return
        for segment in context.segments_to_bind:
            context.set_binding(
                segment[api.ID],
                portbindings.VIF_TYPE_OVS,
                {portbindings.CAP_PORT_FILTER: True,
                 portbindings.OVS_HYBRID_PLUG: False},
                status=constants.PORT_STATUS_ACTIVE)
            return
