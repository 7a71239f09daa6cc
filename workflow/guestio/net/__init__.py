"""The network experiment's testbed (Fig 3, Fig 4, Fig 7, Table 2).

:mod:`guestio.net.testbed` builds the paper's two hosts in network namespaces of
the pipeline's own: HostA and HostB joined by a veth pair (the "physical link",
shaped by tc), the guest's tap on a bridge inside HostB, and tears all of it
down after every run; :mod:`guestio.net.namespaces` finds and removes what a killed run left.
:mod:`guestio.workloads.netbench_session` drives the host side of one guest run through
:class:`guestio.vm.hooks.Hooks`.  The testbed's errors are defined here.
"""


class TestbedError(RuntimeError):
    """The testbed cannot be built or used (the message says which step and why)."""

    __test__ = False  # not a pytest class (its name starts with "Test")


class NotRootError(TestbedError):
    pass

