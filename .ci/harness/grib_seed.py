"""Seed the test cloud: Keystone catalog, test projects/users, flavors, network, quotas.

Run by .ci/openstack-up.sh with /usr/bin/python3 (the Debian OpenStack
libraries). Every step is idempotent: it looks a thing up before creating it.

    grib_seed.py catalog   service users + endpoints (needs only Keystone)
    grib_seed.py cloud     projects it-a/it-b/it-c/it-d with users, flavors,
                           the shared loopback network it-net, quotas

Secrets come from the environment (GRIB_ADMIN_PW, GRIB_SVC_PW, GRIB_IT_PW_A...),
never from argv, and are never printed.
"""

import os
import sys

HOST = os.environ.get('GRIB_HOST', '127.0.0.1')
KS_URL = 'http://%s:5000/v3' % HOST
REGION = 'RegionOne'

SERVICES = (
    # user, service type, endpoint URL
    ('glance', 'image', 'http://%s:9292' % HOST),
    ('placement', 'placement', 'http://%s:8778' % HOST),
    ('nova', 'compute', 'http://%s:8774/v2.1' % HOST),
    ('neutron', 'network', 'http://%s:9696' % HOST),
)

# name, vcpus, ram MiB, disk GiB. The builder needs >= 2 vCPU, 1024 MiB, 20 GiB:
# it.tiny and it.small do not meet that, it.min meets it exactly.
FLAVORS = (
    ('it.tiny', 1, 512, 1),
    ('it.small', 1, 1024, 10),
    ('it.min', 2, 1024, 20),
    ('it.medium', 2, 2048, 20),
    ('it.large', 4, 4096, 40),
)

TEST_PROJECTS = ('it-a', 'it-b', 'it-c', 'it-d')
# it-d's user also has this role; Nova's policy (openstack-up.sh) then
# refuses it os-console-output, as some clouds do.
NO_CONSOLE_PROJECT, NO_CONSOLE_ROLE = 'it-d', 'grib-no-console'
NETWORK = 'it-net'
SUBNET_CIDR = '127.77.0.0/24'


def say(msg):
    print('grib_seed: %s' % msg, flush=True)


def keystone():
    from keystoneauth1 import session
    from keystoneauth1.identity import v3
    from keystoneclient.v3 import client
    auth = v3.Password(auth_url=KS_URL, username='admin',
                       password=os.environ['GRIB_ADMIN_PW'],
                       project_name='admin', user_domain_id='default',
                       project_domain_id='default')
    return client.Client(session=session.Session(auth=auth))


def first(items):
    return items[0] if items else None


def ensure_project(ks, name):
    return (first(ks.projects.list(name=name, domain='default'))
            or ks.projects.create(name, 'default'))


def ensure_role(ks, name):
    return first(ks.roles.list(name=name)) or ks.roles.create(name)


def password_works(name, password):
    from keystoneauth1 import exceptions, session
    from keystoneauth1.identity import v3
    auth = v3.Password(auth_url=KS_URL, username=name, password=password,
                       user_domain_name='Default', unscoped=True)
    try:
        session.Session(auth=auth).get_token()
        return True
    except exceptions.Unauthorized:
        return False


def ensure_user(ks, name, password, project):
    user = first(ks.users.list(name=name, domain='default'))
    if user:
        # Setting a password revokes the user's tokens: the running services
        # would be refused by each other (placement answered the scheduler 401
        # after a rerun). Set it only when it is not already the right one.
        if not password_works(name, password):
            ks.users.update(user, password=password)
        return user
    return ks.users.create(name, domain='default', password=password,
                           default_project=project)


def catalog():
    ks = keystone()
    service_p = ensure_project(ks, 'service')
    admin_r = ensure_role(ks, 'admin')
    service_r = ensure_role(ks, 'service')
    for user, kind, url in SERVICES:
        u = ensure_user(ks, user, os.environ['GRIB_SVC_PW'], service_p)
        ks.roles.grant(admin_r, user=u, project=service_p)
        ks.roles.grant(service_r, user=u, project=service_p)
        svc = first(ks.services.list(type=kind)) or ks.services.create(user, type=kind)
        have = {e.interface for e in ks.endpoints.list(service=svc, region=REGION)}
        for interface in ('public', 'internal', 'admin'):
            if interface not in have:
                ks.endpoints.create(svc, url, interface=interface, region=REGION)
    say('catalog ready')


def cloud():
    ks = keystone()
    member_r = ensure_role(ks, 'member')
    ensure_role(ks, 'reader')
    projects = {}
    for name in TEST_PROJECTS:
        env = 'GRIB_IT_PW_' + name.split('-')[1].upper()
        proj = ensure_project(ks, name)
        user = ensure_user(ks, name, os.environ[env], proj)
        ks.roles.grant(member_r, user=user, project=proj)
        if name == NO_CONSOLE_PROJECT:
            ks.roles.grant(ensure_role(ks, NO_CONSOLE_ROLE), user=user, project=proj)
        projects[name] = proj.id
    say('projects and users ready: %s' % ', '.join(TEST_PROJECTS))

    import openstack
    conn = openstack.connect(
        auth_url=KS_URL, username='admin', password=os.environ['GRIB_ADMIN_PW'],
        project_name='admin', user_domain_name='Default',
        project_domain_name='Default', region_name=REGION,
        identity_api_version='3')

    for name, vcpus, ram, disk in FLAVORS:
        if not conn.compute.find_flavor(name, ignore_missing=True):
            conn.compute.create_flavor(name=name, vcpus=vcpus, ram=ram,
                                       disk=disk, is_public=True)
    say('flavors ready: %s' % ', '.join(f[0] for f in FLAVORS))

    net = conn.network.find_network(NETWORK)
    if not net:
        net = conn.network.create_network(name=NETWORK, is_shared=True)
    if not list(conn.network.subnets(network_id=net.id)):
        # No gateway and no DHCP: Neutron then accepts a loopback range, and
        # every fixed address a server gets is on 127/8.
        conn.network.create_subnet(
            network_id=net.id, name=NETWORK + '-subnet', ip_version=4,
            cidr=SUBNET_CIDR, is_dhcp_enabled=False, gateway_ip=None)
    for sub in conn.network.subnets(network_id=net.id):
        if sub.cidr != SUBNET_CIDR or sub.gateway_ip or sub.is_dhcp_enabled:
            sys.exit('grib_seed: subnet %s of %s is %s gateway=%s dhcp=%s; '
                     'purge the stack (GRIB_PURGE=1 openstack-down.sh)'
                     % (sub.name, NETWORK, sub.cidr, sub.gateway_ip,
                        sub.is_dhcp_enabled))
    others = [n.name for n in conn.network.networks() if n.id != net.id]
    if others:
        sys.exit('grib_seed: unexpected networks %s: only %s may exist'
                 % (others, NETWORK))
    say('network %s ready (%s, no DHCP, no gateway)' % (NETWORK, SUBNET_CIDR))

    for pid in list(projects.values()) + [conn.current_project_id]:
        conn.set_compute_quotas(pid, instances=50, cores=200, ram=409600,
                                key_pairs=200, server_groups=50,
                                metadata_items=256)
        conn.set_network_quotas(pid, network=20, subnet=20, port=200,
                                security_group=100, security_group_rule=1000)
    say('quotas raised for the test projects')


def main():
    cmds = {'catalog': catalog, 'cloud': cloud}
    if len(sys.argv) != 2 or sys.argv[1] not in cmds:
        sys.exit('usage: grib_seed.py catalog|cloud')
    cmds[sys.argv[1]]()


if __name__ == '__main__':
    main()
