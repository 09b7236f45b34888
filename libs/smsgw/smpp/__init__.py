"""SMPP 3.4 over asyncio TCP, written for smsgw (see docs/smpp.md).

Modules, each owning one idea:

* ``constants`` - command ids, command_status codes, TLV tags, field bits.
* ``pdu``       - the PDU codec (bytes <-> dataclasses), no I/O.
* ``framing``   - whole PDUs on an asyncio stream.
* ``session``   - one connection: sequence numbers, request/response matching,
                  enquire_link/unbind/generic_nack chores. Shared by client and simulator.
* ``receipts``  - receipt text parsing, receipt states, message-id normalisation.
* ``inbound``   - a deliver_sm interpreted as receipt or MO (``InboundDeliver``).
* ``outbound``  - a text message as submit_sm PDUs, per long-message mode (UDH, SAR, message_payload).
* ``flow``      - the per-bind submit gate: TPS limit and backpressure pause, first come first served.
* ``client``    - the ESME client the carrier-adapter uses (``SmppClient``).

The SMSC simulator for development and tests is ``smsgw_dev.simulators.smsc``.
"""
