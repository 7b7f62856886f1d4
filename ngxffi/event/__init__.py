"""The event core (≈ src/event and the connection parts of src/core): the cycle and its
connection pool, listening sockets, events and the actions table, timers, posted
queues, accepting, and the event modules (epoll, poll). Imports only the binding and
:mod:`ngxffi.core`."""
