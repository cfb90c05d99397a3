/*
 * optin benchmark load generator: many RTP audio streams from ONE UDP socket.
 *
 * Sends pre-encoded audio (Opus packets from the fixtures, or 160-byte G.711 frames) as RTP
 * (RFC 3550 §5.1) to N destinations (mediasoup PlainTransports), each stream on a tight
 * 20 ms schedule with its own phase, a little per-packet jitter, a fixed SSRC, a random
 * initial sequence number and timestamp, and a timestamp that advances by each packet's
 * duration. Packets due at the same moment go out in one sendmmsg(2) call.
 *
 * Built by bench/loadgen.ts with `cc -O2` into a cache directory; not a general tool.
 *
 * Usage: loadgen -p PROFILE_FILE [-p ...] -T TOTAL_MS [-r RAMP_MS] [-j JITTER_US]
 *                [-b BATCH_US] [-i INTERVAL_MS] [-s SEED] -o STATS_FILE  < destinations
 *
 *   destinations (stdin), one stream per line:  <ipv4> <port> <ssrc> <payload-type> <profile>
 *     profile: index of a -p file (0-based); each stream sends that profile's packets, looped,
 *     starting at a stream-specific packet so that streams are not in lockstep.
 *   PROFILE_FILE: "OLGP" u32le count, then per packet: u16le length, u16le samples, bytes.
 *   -T: the whole run lasts TOTAL_MS from start; every stream stops then (so all end together).
 *   -r: stream i starts at i * RAMP_MS / N plus a random phase in [0, INTERVAL): calls arrive
 *       over the ramp instead of all at once (their segment boundaries then do not align).
 *   -j: each packet leaves up to JITTER_US late (uniform), never reordered within a stream.
 *   -b: a packet due up to BATCH_US after the one that woke the generator leaves with it, in the
 *       same sendmmsg (default 200): fewer wake-ups, at most that much (early) extra jitter.
 *
 * Output: "start <unix ms>" on stdout when the schedule starts, then at the end one JSON
 * line with totals and send-lateness percentiles; STATS_FILE gets one line per stream in
 * input order: "<sent> <failed>". SIGINT/SIGTERM end the run early (stats still written).
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#define MAX_PROFILES 8
#define BATCH 1024
#define MAX_PKT 1500
#define RTP_HEADER 12
/* Lateness histogram: 10 us buckets up to 200 ms, then one overflow bucket. */
#define HIST_BUCKET_US 10
#define HIST_BUCKETS 20001

typedef struct {
  uint16_t len;
  uint16_t samples;
  const uint8_t *data;
} packet_t;

typedef struct {
  packet_t *packets;
  uint32_t count;
} profile_t;

typedef struct {
  struct sockaddr_in addr;
  uint32_t ssrc;
  uint8_t pt;
  uint8_t profile;
  uint16_t seq;
  uint32_t ts;
  uint32_t next_packet; /* index into the profile, wraps */
  int64_t start_ns;     /* schedule origin of this stream */
  uint64_t k;           /* packets scheduled so far */
  int64_t due_ns;       /* when the current packet is due (schedule + jitter) */
  uint64_t sent;
  uint64_t failed;
} stream_t;

static volatile sig_atomic_t stop_flag = 0;
static void on_signal(int sig) {
  (void)sig;
  stop_flag = 1;
}

static int64_t now_ns(void) {
  struct timespec t;
  clock_gettime(CLOCK_MONOTONIC, &t);
  return (int64_t)t.tv_sec * 1000000000LL + t.tv_nsec;
}

/* xorshift64*: deterministic per seed, good enough for phases and jitter. */
static uint64_t rng_state = 0x9E3779B97F4A7C15ULL;
static uint64_t rng(void) {
  rng_state ^= rng_state >> 12;
  rng_state ^= rng_state << 25;
  rng_state ^= rng_state >> 27;
  return rng_state * 2685821657736338717ULL;
}

static void die(const char *msg) {
  fprintf(stderr, "loadgen: %s\n", msg);
  exit(2);
}

static uint8_t *read_file(const char *path, size_t *size) {
  FILE *f = fopen(path, "rb");
  if (!f) return NULL;
  fseek(f, 0, SEEK_END);
  long n = ftell(f);
  fseek(f, 0, SEEK_SET);
  uint8_t *buf = malloc(n > 0 ? (size_t)n : 1);
  if (!buf || fread(buf, 1, (size_t)n, f) != (size_t)n) {
    fclose(f);
    free(buf);
    return NULL;
  }
  fclose(f);
  *size = (size_t)n;
  return buf;
}

static void load_profile(const char *path, profile_t *p) {
  size_t size = 0;
  uint8_t *buf = read_file(path, &size);
  if (!buf || size < 8 || memcmp(buf, "OLGP", 4) != 0) die("cannot read a profile file (expected OLGP format)");
  uint32_t count = (uint32_t)buf[4] | (uint32_t)buf[5] << 8 | (uint32_t)buf[6] << 16 | (uint32_t)buf[7] << 24;
  if (count == 0) die("empty profile");
  p->packets = calloc(count, sizeof(packet_t));
  p->count = count;
  size_t at = 8;
  for (uint32_t i = 0; i < count; i++) {
    if (at + 4 > size) die("truncated profile");
    uint16_t len = (uint16_t)(buf[at] | buf[at + 1] << 8);
    uint16_t samples = (uint16_t)(buf[at + 2] | buf[at + 3] << 8);
    at += 4;
    if (at + len > size || len + RTP_HEADER > MAX_PKT || samples == 0) die("bad packet in profile");
    p->packets[i].len = len;
    p->packets[i].samples = samples;
    p->packets[i].data = buf + at;
    at += len;
  }
}

/* ---- binary min-heap of stream indices keyed by due_ns ---- */
static stream_t *streams;
static uint32_t *heap;
static uint32_t heap_n;

static void heap_swap(uint32_t a, uint32_t b) {
  uint32_t t = heap[a];
  heap[a] = heap[b];
  heap[b] = t;
}
static void heap_up(uint32_t i) {
  while (i > 0) {
    uint32_t parent = (i - 1) / 2;
    if (streams[heap[parent]].due_ns <= streams[heap[i]].due_ns) break;
    heap_swap(i, parent);
    i = parent;
  }
}
static void heap_down(uint32_t i) {
  for (;;) {
    uint32_t l = 2 * i + 1, r = l + 1, m = i;
    if (l < heap_n && streams[heap[l]].due_ns < streams[heap[m]].due_ns) m = l;
    if (r < heap_n && streams[heap[r]].due_ns < streams[heap[m]].due_ns) m = r;
    if (m == i) return;
    heap_swap(i, m);
    i = m;
  }
}
static void heap_push(uint32_t s) {
  heap[heap_n] = s;
  heap_up(heap_n++);
}
static uint32_t heap_pop(void) {
  uint32_t top = heap[0];
  heap[0] = heap[--heap_n];
  if (heap_n > 0) heap_down(0);
  return top;
}

int main(int argc, char **argv) {
  profile_t profiles[MAX_PROFILES];
  int nprofiles = 0;
  int64_t total_ms = -1, ramp_ms = 0, jitter_us = 0, interval_ms = 20, batch_us = 200;
  uint64_t seed = 1;
  const char *stats_path = NULL;

  int opt;
  while ((opt = getopt(argc, argv, "p:T:r:j:b:i:s:o:")) != -1) {
    switch (opt) {
      case 'p':
        if (nprofiles == MAX_PROFILES) die("too many profiles");
        load_profile(optarg, &profiles[nprofiles++]);
        break;
      case 'T': total_ms = atoll(optarg); break;
      case 'r': ramp_ms = atoll(optarg); break;
      case 'j': jitter_us = atoll(optarg); break;
      case 'b': batch_us = atoll(optarg); break;
      case 'i': interval_ms = atoll(optarg); break;
      case 's': seed = strtoull(optarg, NULL, 10); break;
      case 'o': stats_path = optarg; break;
      default: die("usage: loadgen -p PROFILE [-p ...] -T TOTAL_MS [-r RAMP_MS] [-j JITTER_US] [-b BATCH_US] [-i INTERVAL_MS] [-s SEED] -o STATS < destinations");
    }
  }
  if (nprofiles == 0 || total_ms <= 0 || !stats_path) die("need -p, -T and -o");
  if (interval_ms <= 0 || jitter_us < 0 || jitter_us >= interval_ms * 1000) die("need 0 <= jitter < interval");
  if (batch_us < 0 || batch_us >= interval_ms * 1000) die("need 0 <= batch < interval");
  rng_state ^= seed * 0xD1B54A32D192ED03ULL;
  if (rng_state == 0) rng_state = 1;

  /* Destinations. */
  size_t cap = 1024, n = 0;
  streams = calloc(cap, sizeof(stream_t));
  char ip[64];
  unsigned port, ssrc, pt, prof;
  while (scanf("%63s %u %u %u %u", ip, &port, &ssrc, &pt, &prof) == 5) {
    if (n == cap) {
      cap *= 2;
      streams = realloc(streams, cap * sizeof(stream_t));
      memset(streams + n, 0, (cap - n) * sizeof(stream_t));
    }
    stream_t *s = &streams[n];
    s->addr.sin_family = AF_INET;
    s->addr.sin_port = htons((uint16_t)port);
    if (inet_pton(AF_INET, ip, &s->addr.sin_addr) != 1) die("bad destination address");
    if ((int)prof >= nprofiles || pt > 127 || port == 0 || port > 65535) die("bad destination line");
    s->ssrc = ssrc;
    s->pt = (uint8_t)pt;
    s->profile = (uint8_t)prof;
    s->seq = (uint16_t)rng();
    s->ts = (uint32_t)rng();
    s->next_packet = (uint32_t)(rng() % profiles[prof].count);
    n++;
  }
  if (n == 0) die("no destinations on stdin");

  int fd = socket(AF_INET, SOCK_DGRAM, 0);
  if (fd < 0) die("socket() failed");
  int sndbuf = 8 << 20;
  setsockopt(fd, SOL_SOCKET, SO_SNDBUF, &sndbuf, sizeof sndbuf);

  signal(SIGINT, on_signal);
  signal(SIGTERM, on_signal);

  const int64_t interval_ns = interval_ms * 1000000LL;
  const int64_t t0 = now_ns() + 5000000LL; /* 5 ms to settle */
  const int64_t end_ns = t0 + total_ms * 1000000LL;
  heap = malloc(n * sizeof(uint32_t));
  for (size_t i = 0; i < n; i++) {
    stream_t *s = &streams[i];
    s->start_ns = t0 + (int64_t)(ramp_ms * 1000000LL * (int64_t)i / (int64_t)n) + (int64_t)(rng() % (uint64_t)interval_ns);
    s->due_ns = s->start_ns + (jitter_us > 0 ? (int64_t)(rng() % (uint64_t)(jitter_us * 1000)) : 0);
    heap_push((uint32_t)i);
  }
  {
    struct timespec rt;
    clock_gettime(CLOCK_REALTIME, &rt);
    printf("start %lld\n", (long long)rt.tv_sec * 1000LL + rt.tv_nsec / 1000000 + 5);
    fflush(stdout);
  }

  static uint8_t bufs[BATCH][MAX_PKT];
  static struct mmsghdr msgs[BATCH];
  static struct iovec iovs[BATCH];
  static uint32_t batch_stream[BATCH];
  static int64_t batch_due[BATCH];
  uint64_t *hist = calloc(HIST_BUCKETS, sizeof(uint64_t));
  uint64_t total_sent = 0, total_failed = 0, batches = 0;
  int64_t late_max_ns = 0;
  const int64_t slack_ns = batch_us * 1000; /* send what is due within the batch window together */

  while (!stop_flag && heap_n > 0) {
    int64_t now = now_ns();
    int64_t next_due = streams[heap[0]].due_ns;
    if (next_due > now) {
      /* Sleep until the next packet is due; then it and everything due within the batch window
         after it leave together. */
      struct timespec ts = {.tv_sec = (time_t)(next_due / 1000000000LL), .tv_nsec = (long)(next_due % 1000000000LL)};
      clock_nanosleep(CLOCK_MONOTONIC, TIMER_ABSTIME, &ts, NULL);
      continue;
    }
    /* Gather everything due by the end of the batch window into one batch. */
    int nb = 0;
    while (heap_n > 0 && nb < BATCH && streams[heap[0]].due_ns <= now + slack_ns) {
      uint32_t si = heap_pop();
      stream_t *s = &streams[si];
      const profile_t *p = &profiles[s->profile];
      const packet_t *pk = &p->packets[s->next_packet];
      uint8_t *b = bufs[nb];
      b[0] = 0x80;                                             /* V=2, no padding/extension/CSRC */
      b[1] = (uint8_t)((s->k == 0 ? 0x80 : 0) | s->pt);        /* marker on the first packet of the talkspurt */
      b[2] = (uint8_t)(s->seq >> 8);
      b[3] = (uint8_t)s->seq;
      b[4] = (uint8_t)(s->ts >> 24);
      b[5] = (uint8_t)(s->ts >> 16);
      b[6] = (uint8_t)(s->ts >> 8);
      b[7] = (uint8_t)s->ts;
      b[8] = (uint8_t)(s->ssrc >> 24);
      b[9] = (uint8_t)(s->ssrc >> 16);
      b[10] = (uint8_t)(s->ssrc >> 8);
      b[11] = (uint8_t)s->ssrc;
      memcpy(b + RTP_HEADER, pk->data, pk->len);
      iovs[nb].iov_base = b;
      iovs[nb].iov_len = RTP_HEADER + pk->len;
      memset(&msgs[nb].msg_hdr, 0, sizeof msgs[nb].msg_hdr);
      msgs[nb].msg_hdr.msg_name = &s->addr;
      msgs[nb].msg_hdr.msg_namelen = sizeof s->addr;
      msgs[nb].msg_hdr.msg_iov = &iovs[nb];
      msgs[nb].msg_hdr.msg_iovlen = 1;
      batch_stream[nb] = si;
      batch_due[nb] = s->due_ns;
      nb++;
      /* Advance the stream: next packet, seq + 1, ts + this packet's duration. */
      s->seq++;
      s->ts += pk->samples;
      s->next_packet = (s->next_packet + 1) % p->count;
      s->k++;
      int64_t sched = s->start_ns + (int64_t)s->k * interval_ns;
      if (sched < end_ns) {
        s->due_ns = sched + (jitter_us > 0 ? (int64_t)(rng() % (uint64_t)(jitter_us * 1000)) : 0);
        heap_push(si);
      }
    }
    /* Send the batch; retry the remainder a few times on transient errors. */
    int done = 0, tries = 0;
    while (done < nb) {
      int r = sendmmsg(fd, msgs + done, (unsigned)(nb - done), 0);
      if (r > 0) {
        for (int i = done; i < done + r; i++) streams[batch_stream[i]].sent++;
        done += r;
        tries = 0;
        continue;
      }
      if (r < 0 && errno == EINTR) continue;
      if (++tries > 3) {
        /* This message fails for good (e.g. ENOBUFS): count it and move on. */
        streams[batch_stream[done]].failed++;
        total_failed++;
        done++;
        tries = 0;
      }
    }
    batches++;
    int64_t after = now_ns();
    for (int i = 0; i < nb; i++) {
      int64_t late = after - batch_due[i];
      if (late < 0) late = 0;
      if (late > late_max_ns) late_max_ns = late;
      uint64_t bucket = (uint64_t)(late / 1000 / HIST_BUCKET_US);
      hist[bucket < HIST_BUCKETS - 1 ? bucket : HIST_BUCKETS - 1]++;
    }
    total_sent += (uint64_t)nb;
  }
  total_sent -= total_failed;

  FILE *out = fopen(stats_path, "w");
  if (!out) die("cannot write the stats file");
  for (size_t i = 0; i < n; i++) fprintf(out, "%llu %llu\n", (unsigned long long)streams[i].sent, (unsigned long long)streams[i].failed);
  fclose(out);

  /* Send-lateness percentiles: how far behind its schedule the generator itself ran. */
  uint64_t counted = 0, p50 = 0, p99 = 0, p999 = 0, acc = 0;
  for (int i = 0; i < HIST_BUCKETS; i++) counted += hist[i];
  for (int i = 0; i < HIST_BUCKETS; i++) {
    uint64_t before = acc;
    acc += hist[i];
    if (before < counted * 50 / 100 && acc >= counted * 50 / 100) p50 = (uint64_t)i * HIST_BUCKET_US;
    if (before < counted * 99 / 100 && acc >= counted * 99 / 100) p99 = (uint64_t)i * HIST_BUCKET_US;
    if (before < counted * 999 / 1000 && acc >= counted * 999 / 1000) p999 = (uint64_t)i * HIST_BUCKET_US;
  }
  printf("{\"streams\":%zu,\"sent\":%llu,\"failed\":%llu,\"batches\":%llu,\"lateP50Us\":%llu,\"lateP99Us\":%llu,\"lateP999Us\":%llu,\"lateMaxUs\":%lld,\"stoppedEarly\":%s}\n",
         n, (unsigned long long)total_sent, (unsigned long long)total_failed, (unsigned long long)batches, (unsigned long long)p50,
         (unsigned long long)p99, (unsigned long long)p999, (long long)(late_max_ns / 1000), stop_flag ? "true" : "false");
  fflush(stdout);
  return 0;
}
