// A Java TCP server for tests/cgroup.rs, run as a single source file (`java Server.java`, the
// JDK's in-memory compiler). Java never turns keepalive on by itself. It waits for commands on
// stdin, so that the test can move it into a cgroup before it makes any socket:
//
//   listen  listen on 127.0.0.1, a free port, accept connections in a thread and keep them;
//           prints the port
//   show    one line per accepted connection, as the JVM itself reads it (jdk.net options):
//           "local-port peer-port SO_KEEPALIVE TCP_KEEPIDLE TCP_KEEPINTERVAL TCP_KEEPCOUNT",
//           then "end"

import java.io.BufferedReader;
import java.io.InputStreamReader;
import java.net.InetAddress;
import java.net.ServerSocket;
import java.net.Socket;
import java.net.StandardSocketOptions;
import java.util.ArrayList;
import java.util.List;
import jdk.net.ExtendedSocketOptions;

public class Server {
    static final List<Socket> accepted = new ArrayList<>();

    public static void main(String[] args) throws Exception {
        BufferedReader in = new BufferedReader(new InputStreamReader(System.in));
        String line;
        while ((line = in.readLine()) != null) {
            switch (line) {
                case "listen": {
                    ServerSocket l = new ServerSocket(0, 50, InetAddress.getByName("127.0.0.1"));
                    Thread t = new Thread(() -> {
                        try {
                            while (true) {
                                Socket s = l.accept();
                                synchronized (accepted) {
                                    accepted.add(s);
                                }
                            }
                        } catch (Exception e) {
                            System.err.println("accept: " + e);
                        }
                    });
                    t.setDaemon(true);
                    t.start();
                    System.out.println(l.getLocalPort());
                    break;
                }
                case "show": {
                    synchronized (accepted) {
                        for (Socket s : accepted) {
                            System.out.println(s.getLocalPort() + " " + s.getPort() + " "
                                    + (s.getOption(StandardSocketOptions.SO_KEEPALIVE) ? 1 : 0) + " "
                                    + s.getOption(ExtendedSocketOptions.TCP_KEEPIDLE) + " "
                                    + s.getOption(ExtendedSocketOptions.TCP_KEEPINTERVAL) + " "
                                    + s.getOption(ExtendedSocketOptions.TCP_KEEPCOUNT));
                        }
                    }
                    System.out.println("end");
                    break;
                }
                default:
                    System.err.println("unknown command: " + line);
                    System.exit(2);
            }
            System.out.flush();
        }
    }
}
