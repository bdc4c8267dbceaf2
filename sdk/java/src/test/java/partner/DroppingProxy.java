package partner;

import java.io.ByteArrayOutputStream;
import java.io.IOException;
import java.io.InputStream;
import java.io.OutputStream;
import java.net.InetAddress;
import java.net.ServerSocket;
import java.net.Socket;
import java.net.URI;
import java.nio.charset.StandardCharsets;
import java.util.Locale;

/**
 * A loopback proxy in front of keygate whose first connection fails the way
 * a keep-alive connection closed by the server fails: it reads one request
 * and closes without an answer, either before passing the request on or
 * after keygate has answered it. Every later connection is piped through.
 */
final class DroppingProxy implements AutoCloseable {
    enum Drop { BEFORE_FORWARDING, AFTER_KEYGATE_ANSWERED }

    private final ServerSocket listener = new ServerSocket(0, 16, InetAddress.getLoopbackAddress());
    private final URI keygate;
    private final Drop drop;

    DroppingProxy(URI keygate, Drop drop) throws IOException {
        this.keygate = keygate;
        this.drop = drop;
        Thread acceptor = new Thread(this::accept);
        acceptor.setDaemon(true);
        acceptor.start();
    }

    String url() {
        return "http://127.0.0.1:" + listener.getLocalPort();
    }

    @Override
    public void close() throws IOException {
        listener.close();
    }

    private void accept() {
        boolean first = true;
        while (!listener.isClosed()) {
            try {
                Socket client = listener.accept();
                Socket server = new Socket(keygate.getHost(), keygate.getPort());
                if (first) {
                    first = false;
                    dropFirst(client, server);
                } else {
                    pipe(client.getInputStream(), server.getOutputStream(), server);
                    pipe(server.getInputStream(), client.getOutputStream(), client);
                }
            } catch (IOException e) {
                return; // closed
            }
        }
    }

    private void dropFirst(Socket client, Socket server) throws IOException {
        try (client; server) {
            byte[] request = readMessage(client.getInputStream());
            if (drop == Drop.AFTER_KEYGATE_ANSWERED) {
                server.getOutputStream().write(request);
                server.getOutputStream().flush();
                readMessage(server.getInputStream());
            }
        }
    }

    private static void pipe(InputStream from, OutputStream to, Socket closeWhenDone) {
        Thread copier = new Thread(() -> {
            try (closeWhenDone) {
                from.transferTo(to);
            } catch (IOException e) {
                // the other side went away
            }
        });
        copier.setDaemon(true);
        copier.start();
    }

    /** One HTTP/1.1 message whose body, if any, has a Content-Length. */
    private static byte[] readMessage(InputStream in) throws IOException {
        ByteArrayOutputStream message = new ByteArrayOutputStream();
        int matched = 0;
        while (matched < 4) {
            int b = in.read();
            if (b < 0) throw new IOException("closed before the end of the head");
            message.write(b);
            matched = (b == "\r\n\r\n".charAt(matched)) ? matched + 1 : (b == '\r' ? 1 : 0);
        }
        String head = message.toString(StandardCharsets.ISO_8859_1);
        int length = 0;
        for (String line : head.split("\r\n")) {
            if (line.toLowerCase(Locale.ROOT).startsWith("content-length:")) {
                length = Integer.parseInt(line.substring("content-length:".length()).trim());
            }
        }
        message.write(in.readNBytes(length));
        return message.toByteArray();
    }
}
