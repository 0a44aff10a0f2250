/*
 * onair-udp-echo: checks the UDP path a WebRTC media port takes through QEMU user networking.
 *
 *   onair-udp-echo PORT_MIN PORT_MAX
 *
 * Binds one unconnected UDP socket per port (like onaird's ICE sockets) and answers every
 * datagram with sendto() to its source:  "echo port=P from=A:Q len=N: <payload>".
 * A datagram "PROBE A.B.C.D:Q" is not echoed: instead the guest sends "probe port=P" from the
 * same socket to A.B.C.D:Q (a guest-initiated send, like an ICE check to a peer-reflexive
 * candidate), so the host can see which source address and port that send arrives from.
 */
#include <arpa/inet.h>
#include <netinet/in.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

int main(int argc, char **argv)
{
	int lo = argc > 1 ? atoi(argv[1]) : 50000, hi = argc > 2 ? atoi(argv[2]) : lo;
	int n = hi - lo + 1;
	struct pollfd *fds;

	if (n < 1 || n > 1024) {
		fprintf(stderr, "usage: onair-udp-echo PORT_MIN PORT_MAX\n");
		return 2;
	}
	fds = calloc((size_t)n, sizeof *fds);
	for (int i = 0; i < n; i++) {
		struct sockaddr_in a = { .sin_family = AF_INET, .sin_port = htons((unsigned short)(lo + i)) };
		int fd = socket(AF_INET, SOCK_DGRAM, 0);
		if (fd < 0 || bind(fd, (struct sockaddr *)&a, sizeof a) < 0) {
			perror("onair-udp-echo: bind");
			return 1;
		}
		fds[i].fd = fd;
		fds[i].events = POLLIN;
	}
	printf("onair-udp-echo: listening on UDP %d-%d\n", lo, hi);
	fflush(stdout);
	for (;;) {
		if (poll(fds, (nfds_t)n, -1) < 0)
			continue;
		for (int i = 0; i < n; i++) {
			char in[1500], out[1700], ip[INET_ADDRSTRLEN];
			struct sockaddr_in from;
			socklen_t fl = sizeof from;
			ssize_t len;
			if (!(fds[i].revents & POLLIN))
				continue;
			len = recvfrom(fds[i].fd, in, sizeof in - 1, 0, (struct sockaddr *)&from, &fl);
			if (len < 0)
				continue;
			in[len] = 0;
			inet_ntop(AF_INET, &from.sin_addr, ip, sizeof ip);
			if (strncmp(in, "PROBE ", 6) == 0) {
				struct sockaddr_in to = { .sin_family = AF_INET };
				char *colon = strchr(in + 6, ':');
				if (!colon)
					continue;
				*colon = 0;
				inet_pton(AF_INET, in + 6, &to.sin_addr);
				to.sin_port = htons((unsigned short)atoi(colon + 1));
				int m = snprintf(out, sizeof out, "probe port=%d", lo + i);
				sendto(fds[i].fd, out, (size_t)m, 0, (struct sockaddr *)&to, sizeof to);
				printf("onair-udp-echo: port %d: probe to %s:%s (asked by %s:%u)\n", lo + i,
				       in + 6, colon + 1, ip, ntohs(from.sin_port));
			} else {
				int m = snprintf(out, sizeof out, "echo port=%d from=%s:%u len=%zd: %s",
						 lo + i, ip, ntohs(from.sin_port), len, in);
				sendto(fds[i].fd, out, (size_t)m, 0, (struct sockaddr *)&from, fl);
				printf("onair-udp-echo: port %d: %zd bytes from %s:%u echoed\n", lo + i,
				       len, ip, ntohs(from.sin_port));
			}
			fflush(stdout);
		}
	}
}
