"""Start nova-compute with the test virt driver grib_qemu_virt.

Nova imports a compute driver only as ``nova.virt.<compute_driver>``, so the
module is registered under that name before nova-compute starts. Importing
nova.cmd.compute first lets Nova monkey-patch eventlet before anything else.
"""

import sys

from nova.cmd import compute  # must come first: monkey-patches eventlet

import grib_qemu_virt

sys.modules['nova.virt.grib_qemu_virt'] = grib_qemu_virt
sys.argv[0] = 'nova-compute'
sys.exit(compute.main())
