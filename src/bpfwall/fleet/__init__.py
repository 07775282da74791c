"""The fleet: one policy for many hosts, from etcd v3.

policy: a host's effective rule file, merged from the policies that select it.
store: the etcd client (etcd3gw over etcd's JSON gateway), its watch and leases.
agent: `bpfwall agent`, which keeps a host's firewall equal to its effective policy.
control: `bpfwall fleet`: status, push (with a canary), rm, and fleet set elements.
"""
