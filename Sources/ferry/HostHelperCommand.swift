import ArgumentParser
import FerrySystem

/// `ferry host-helper [--mountpoint M --connection N] [--socket S]` (hidden): the process a
/// sandboxed `ferry serve` leaves on the host to unmount its FUSE mount or remove its socket
/// file (see HostHelper). It talks to the server on descriptor 3 and exits when the server's
/// end closes.
struct HostHelperCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "host-helper", abstract: "Host-side helper of a sandboxed server (started by ferry serve).",
        shouldDisplay: false)

    @Option(help: "The server's mount point.")
    var mountpoint: String?

    @Option(help: "The FUSE connection number (device minor) of the server's mount.")
    var connection: UInt32?

    @Option(help: "The server's vhost-user socket file.")
    var socket: String?

    func run() throws {
        HostHelper.serve(channel: 3, targets: HostHelper.Targets(mountpoint: mountpoint, connection: connection, socket: socket))
    }
}
