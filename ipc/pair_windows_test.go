package ipc

// transports are the kinds of connection the transport-independent tests run over.
func transports() []transport { return []transport{{"tcp", socketPair}} }
