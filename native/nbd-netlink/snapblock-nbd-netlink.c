/*
 * snapblock-nbd-netlink: hands NBD connections to the Linux kernel nbd driver through its generic
 * netlink family ("nbd", version 1), for what nbd-client(8) does not offer: a dead-connection
 * timeout at connect (NBD_ATTR_DEAD_CONN_TIMEOUT) and NBD_CMD_RECONFIGURE, which gives a device
 * whose server went away a new connection in place of the dead one.
 *
 * The helper connects to the NBD server's unix socket itself and does the fixed-newstyle
 * handshake (NBD_OPT_GO) before passing the socket to the kernel, so the socket is never shared
 * with another process's event loop. It is short-lived: the kernel keeps the connection after it
 * exits. Output is one line of key=value pairs on stdout; errors are one line on stderr.
 *
 * Exit codes: 0 done; 2 usage error; 3 the nbd kernel module is not loaded; 4 the device is busy
 * (taken by another connection); 5 the NBD server or its handshake failed; 6 the device is not
 * configured (nothing to reconfigure or disconnect); 1 anything else.
 *
 * docs/node-attach.md ("Restarts") explains how the data plane uses it.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <inttypes.h>
#include <limits.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <sys/un.h>
#include <unistd.h>
#include <endian.h>
#include <linux/genetlink.h>
#include <linux/nbd-netlink.h>
#include <linux/nbd.h>
#include <linux/netlink.h>

/* The uapi numbers this program relies on (linux/nbd-netlink.h, stable since Linux 4.12). */
_Static_assert(NBD_GENL_VERSION == 1, "nbd genl version");
_Static_assert(NBD_CMD_CONNECT == 1 && NBD_CMD_DISCONNECT == 2 && NBD_CMD_RECONFIGURE == 3 &&
                   NBD_CMD_LINK_DEAD == 4 && NBD_CMD_STATUS == 5,
               "nbd genl commands");
_Static_assert(NBD_ATTR_INDEX == 1 && NBD_ATTR_SIZE_BYTES == 2 && NBD_ATTR_BLOCK_SIZE_BYTES == 3 &&
                   NBD_ATTR_TIMEOUT == 4 && NBD_ATTR_SERVER_FLAGS == 5 && NBD_ATTR_CLIENT_FLAGS == 6 &&
                   NBD_ATTR_SOCKETS == 7 && NBD_ATTR_DEAD_CONN_TIMEOUT == 8 &&
                   NBD_ATTR_DEVICE_LIST == 9,
               "nbd genl attributes");
_Static_assert(NBD_SOCK_ITEM == 1 && NBD_SOCK_FD == 1, "nbd socket list attributes");
_Static_assert(NBD_DEVICE_ITEM == 1 && NBD_DEVICE_INDEX == 1 && NBD_DEVICE_CONNECTED == 2,
               "nbd device list attributes");

enum {
  EXIT_FAIL = 1,
  EXIT_USAGE = 2,
  EXIT_NO_MODULE = 3,
  EXIT_BUSY = 4,
  EXIT_SERVER = 5,
  EXIT_NOT_CONFIGURED = 6,
};

#define MAX_CONNECTIONS 16

/* NBD protocol (proto.md, "Fixed newstyle negotiation"). */
#define NBDMAGIC 0x4e42444d41474943ULL
#define IHAVEOPT 0x49484156454f5054ULL
#define REPLY_MAGIC 0x0003e889045565a9ULL
#define FLAG_FIXED_NEWSTYLE 1u
#define FLAG_NO_ZEROES 2u
#define OPT_GO 7u
#define REP_ACK 1u
#define REP_INFO 3u
#define REP_FLAG_ERROR 0x80000000u
#define INFO_EXPORT 0u
#define MAX_REPLY 65536u

static void die(int code, const char *fmt, ...) __attribute__((noreturn, format(printf, 2, 3)));
static void die(int code, const char *fmt, ...) {
  va_list ap;
  va_start(ap, fmt);
  fputs("snapblock-nbd-netlink: ", stderr);
  vfprintf(stderr, fmt, ap);
  fputc('\n', stderr);
  va_end(ap);
  exit(code);
}

/* ---- options ------------------------------------------------------------------------------ */

struct options {
  const char *unix_path;
  const char *export_name;
  long long index; /* -1: any free device (connect only) */
  unsigned long long block_size;
  unsigned long long timeout;
  unsigned long long dead_conn_timeout;
  int dead_conn_timeout_set;
  int connections;
  int read_only;
};

static unsigned long long number(const char *flag, const char *text, unsigned long long max) {
  char *end = NULL;
  if (text == NULL || *text == '\0' || *text == '-') die(EXIT_USAGE, "%s needs a whole number", flag);
  errno = 0;
  unsigned long long value = strtoull(text, &end, 10);
  if (errno != 0 || *end != '\0' || value > max)
    die(EXIT_USAGE, "%s %s: a whole number from 0 to %llu", flag, text, max);
  return value;
}

static void parse_options(int argc, char **argv, struct options *o) {
  memset(o, 0, sizeof(*o));
  o->index = -1;
  o->block_size = 4096;
  o->connections = 1;
  for (int i = 0; i < argc; i++) {
    const char *flag = argv[i];
    const char *value = i + 1 < argc ? argv[i + 1] : NULL;
    if (strcmp(flag, "--read-only") == 0) {
      o->read_only = 1;
      continue;
    }
    if (value == NULL) die(EXIT_USAGE, "%s needs a value", flag);
    i++;
    if (strcmp(flag, "--unix") == 0) {
      if (value[0] != '/') die(EXIT_USAGE, "--unix %s: an absolute socket path", value);
      if (strlen(value) >= sizeof(((struct sockaddr_un *)0)->sun_path))
        die(EXIT_USAGE, "--unix %s: longer than a unix socket path may be (%zu bytes)", value,
            sizeof(((struct sockaddr_un *)0)->sun_path) - 1);
      o->unix_path = value;
    } else if (strcmp(flag, "--export") == 0) {
      if (strlen(value) > 4096) die(EXIT_USAGE, "--export: at most 4096 bytes");
      o->export_name = value;
    } else if (strcmp(flag, "--index") == 0) {
      o->index = (long long)number(flag, value, INT_MAX);
    } else if (strcmp(flag, "--block-size") == 0) {
      o->block_size = number(flag, value, 65536);
      if (o->block_size < 512 || (o->block_size & (o->block_size - 1)) != 0)
        die(EXIT_USAGE, "--block-size %s: a power of two from 512", value);
    } else if (strcmp(flag, "--timeout") == 0) {
      o->timeout = number(flag, value, 86400);
    } else if (strcmp(flag, "--dead-conn-timeout") == 0) {
      o->dead_conn_timeout = number(flag, value, 86400);
      o->dead_conn_timeout_set = 1;
    } else if (strcmp(flag, "--connections") == 0) {
      o->connections = (int)number(flag, value, MAX_CONNECTIONS);
      if (o->connections < 1) die(EXIT_USAGE, "--connections %s: from 1 to %d", value, MAX_CONNECTIONS);
    } else {
      die(EXIT_USAGE, "unknown option %s", flag);
    }
  }
}

static void need(int present, const char *command, const char *flag) {
  if (!present) die(EXIT_USAGE, "%s needs %s", command, flag);
}

/* ---- the NBD handshake ---------------------------------------------------------------------- */

static void read_exact(int fd, void *buf, size_t len, const char *what) {
  size_t done = 0;
  while (done < len) {
    ssize_t n = read(fd, (char *)buf + done, len - done);
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) die(EXIT_SERVER, "NBD handshake: reading %s: %s", what, strerror(errno));
    if (n == 0) die(EXIT_SERVER, "NBD handshake: the server closed the connection while sending %s", what);
    done += (size_t)n;
  }
}

static void write_exact(int fd, const void *buf, size_t len) {
  size_t done = 0;
  while (done < len) {
    ssize_t n = send(fd, (const char *)buf + done, len - done, MSG_NOSIGNAL);
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) die(EXIT_SERVER, "NBD handshake: writing: %s", strerror(errno));
    done += (size_t)n;
  }
}

static uint64_t get64(const unsigned char *p) {
  uint64_t v;
  memcpy(&v, p, 8);
  return be64toh(v);
}
static uint32_t get32(const unsigned char *p) {
  uint32_t v;
  memcpy(&v, p, 4);
  return be32toh(v);
}
static uint16_t get16(const unsigned char *p) {
  uint16_t v;
  memcpy(&v, p, 2);
  return be16toh(v);
}

struct export_info {
  uint64_t size;
  uint16_t flags;
};

/* Connects to the server's unix socket and negotiates `name` with NBD_OPT_GO; returns the socket. */
static int nbd_handshake(const char *socket_path, const char *name, struct export_info *info) {
  int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (fd < 0) die(EXIT_FAIL, "socket: %s", strerror(errno));
  struct timeval tv = {.tv_sec = 30};
  setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
  setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof(tv));
  struct sockaddr_un addr = {.sun_family = AF_UNIX};
  strncpy(addr.sun_path, socket_path, sizeof(addr.sun_path) - 1);
  if (connect(fd, (struct sockaddr *)&addr, sizeof(addr)) != 0)
    die(EXIT_SERVER, "cannot connect to the NBD server at %s: %s", socket_path, strerror(errno));

  unsigned char greeting[18];
  read_exact(fd, greeting, sizeof(greeting), "its greeting");
  if (get64(greeting) != NBDMAGIC || get64(greeting + 8) != IHAVEOPT)
    die(EXIT_SERVER, "%s does not speak the NBD newstyle protocol", socket_path);
  uint16_t server_flags = get16(greeting + 16);
  if (!(server_flags & FLAG_FIXED_NEWSTYLE))
    die(EXIT_SERVER, "the NBD server at %s does not offer fixed newstyle negotiation", socket_path);
  uint32_t client_flags = htobe32(FLAG_FIXED_NEWSTYLE | (server_flags & FLAG_NO_ZEROES));
  write_exact(fd, &client_flags, 4);

  size_t name_len = strlen(name);
  size_t opt_len = 4 + name_len + 2;
  unsigned char *opt = malloc(16 + opt_len);
  if (opt == NULL) die(EXIT_FAIL, "out of memory");
  uint64_t magic = htobe64(IHAVEOPT);
  uint32_t v32 = htobe32(OPT_GO);
  memcpy(opt, &magic, 8);
  memcpy(opt + 8, &v32, 4);
  v32 = htobe32((uint32_t)opt_len);
  memcpy(opt + 12, &v32, 4);
  v32 = htobe32((uint32_t)name_len);
  memcpy(opt + 16, &v32, 4);
  memcpy(opt + 20, name, name_len);
  memset(opt + 20 + name_len, 0, 2); /* no information requests: NBD_INFO_EXPORT always comes */
  write_exact(fd, opt, 16 + opt_len);
  free(opt);

  int have_export = 0;
  for (;;) {
    unsigned char head[20];
    read_exact(fd, head, sizeof(head), "an option reply");
    if (get64(head) != REPLY_MAGIC) die(EXIT_SERVER, "NBD handshake: bad option reply magic");
    uint32_t type = get32(head + 12);
    uint32_t len = get32(head + 16);
    if (len > MAX_REPLY) die(EXIT_SERVER, "NBD handshake: option reply of %u bytes", len);
    unsigned char *data = malloc(len + 1);
    if (data == NULL) die(EXIT_FAIL, "out of memory");
    read_exact(fd, data, len, "an option reply");
    data[len] = '\0';
    if (type & REP_FLAG_ERROR)
      die(EXIT_SERVER, "the NBD server refused export \"%s\" (error %u%s%s)", name, type & ~REP_FLAG_ERROR,
          len > 0 ? ": " : "", len > 0 ? (char *)data : "");
    if (type == REP_INFO && len >= 12 && get16(data) == INFO_EXPORT) {
      info->size = get64(data + 2);
      info->flags = get16(data + 10);
      have_export = 1;
    }
    free(data);
    if (type == REP_ACK) break;
  }
  if (!have_export) die(EXIT_SERVER, "NBD handshake: the server sent no NBD_INFO_EXPORT");
  struct timeval none = {0};
  setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &none, sizeof(none));
  setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &none, sizeof(none));
  return fd;
}

/* ---- generic netlink ------------------------------------------------------------------------ */

struct msg {
  unsigned char buf[4096];
  size_t len;
};

static struct nlattr *put_attr(struct msg *m, uint16_t type, const void *data, size_t len) {
  size_t total = NLA_ALIGN(NLA_HDRLEN + len);
  if (m->len + total > sizeof(m->buf)) die(EXIT_FAIL, "netlink message too long");
  struct nlattr *a = (struct nlattr *)(m->buf + m->len);
  a->nla_type = type;
  a->nla_len = (uint16_t)(NLA_HDRLEN + len);
  if (len > 0) memcpy((char *)a + NLA_HDRLEN, data, len);
  memset((char *)a + NLA_HDRLEN + len, 0, total - NLA_HDRLEN - len);
  m->len += total;
  return a;
}
static void put_u32(struct msg *m, uint16_t type, uint32_t v) { put_attr(m, type, &v, 4); }
static void put_u64(struct msg *m, uint16_t type, uint64_t v) { put_attr(m, type, &v, 8); }
static size_t nest_start(struct msg *m, uint16_t type) {
  size_t at = m->len;
  put_attr(m, type | NLA_F_NESTED, NULL, 0);
  return at;
}
static void nest_end(struct msg *m, size_t at) {
  ((struct nlattr *)(m->buf + at))->nla_len = (uint16_t)(m->len - at);
}

static void msg_init(struct msg *m, uint16_t family, uint8_t cmd, uint8_t version) {
  memset(m, 0, sizeof(*m));
  struct nlmsghdr *h = (struct nlmsghdr *)m->buf;
  h->nlmsg_type = family;
  h->nlmsg_flags = NLM_F_REQUEST | NLM_F_ACK;
  h->nlmsg_seq = 1;
  struct genlmsghdr *g = (struct genlmsghdr *)(m->buf + NLMSG_HDRLEN);
  g->cmd = cmd;
  g->version = version;
  m->len = NLMSG_HDRLEN + GENL_HDRLEN;
}

static int genl_socket(void) {
  int fd = socket(AF_NETLINK, SOCK_RAW | SOCK_CLOEXEC, NETLINK_GENERIC);
  if (fd < 0) die(EXIT_FAIL, "cannot open a generic netlink socket: %s", strerror(errno));
  struct timeval tv = {.tv_sec = 60};
  setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
  return fd;
}

typedef void (*reply_fn)(const struct nlattr *attrs, size_t len, void *ctx);

/*
 * Sends m and reads until the kernel's acknowledgement: each reply message's attributes go to
 * on_reply. Returns 0, or the (positive) errno the kernel answered with.
 */
static int transact(int fd, struct msg *m, reply_fn on_reply, void *ctx) {
  struct nlmsghdr *h = (struct nlmsghdr *)m->buf;
  h->nlmsg_len = (uint32_t)m->len;
  struct sockaddr_nl kernel = {.nl_family = AF_NETLINK};
  if (sendto(fd, m->buf, m->len, 0, (struct sockaddr *)&kernel, sizeof(kernel)) < 0)
    die(EXIT_FAIL, "netlink send: %s", strerror(errno));
  static unsigned char buf[32768];
  for (;;) {
    ssize_t n = recv(fd, buf, sizeof(buf), 0);
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) die(EXIT_FAIL, "netlink receive: %s", strerror(errno));
    for (struct nlmsghdr *r = (struct nlmsghdr *)buf; NLMSG_OK(r, (size_t)n); r = NLMSG_NEXT(r, n)) {
      if (r->nlmsg_type == NLMSG_ERROR) {
        const struct nlmsgerr *e = NLMSG_DATA(r);
        return -e->error;
      }
      if (r->nlmsg_type == NLMSG_DONE) return 0;
      if (on_reply != NULL && r->nlmsg_len >= NLMSG_HDRLEN + GENL_HDRLEN) {
        const unsigned char *attrs = (const unsigned char *)NLMSG_DATA(r) + GENL_HDRLEN;
        on_reply((const struct nlattr *)attrs, r->nlmsg_len - NLMSG_HDRLEN - GENL_HDRLEN, ctx);
      }
    }
  }
}

#define FOR_EACH_ATTR(a, start, len)                                                   \
  for (const struct nlattr *a = (start); (size_t)((const char *)a - (const char *)(start)) + NLA_HDRLEN <= (len) && \
                                         a->nla_len >= NLA_HDRLEN &&                   \
                                         (size_t)((const char *)a - (const char *)(start)) + a->nla_len <= (len); \
       a = (const struct nlattr *)((const char *)a + NLA_ALIGN(a->nla_len)))
#define ATTR_DATA(a) ((const void *)((const char *)(a) + NLA_HDRLEN))
#define ATTR_LEN(a) ((size_t)(a)->nla_len - NLA_HDRLEN)
#define ATTR_TYPE(a) ((a)->nla_type & NLA_TYPE_MASK)

static void family_reply(const struct nlattr *attrs, size_t len, void *ctx) {
  FOR_EACH_ATTR(a, attrs, len) {
    if (ATTR_TYPE(a) == CTRL_ATTR_FAMILY_ID && ATTR_LEN(a) >= 2) memcpy(ctx, ATTR_DATA(a), 2);
  }
}

/* The id of the "nbd" generic netlink family, which exists while the nbd module is loaded. */
static uint16_t nbd_family(int fd) {
  struct msg m;
  msg_init(&m, GENL_ID_CTRL, CTRL_CMD_GETFAMILY, 1);
  put_attr(&m, CTRL_ATTR_FAMILY_NAME, NBD_GENL_FAMILY_NAME, sizeof(NBD_GENL_FAMILY_NAME));
  uint16_t id = 0;
  int err = transact(fd, &m, family_reply, &id);
  if (err == ENOENT)
    die(EXIT_NO_MODULE,
        "the nbd kernel module is not loaded (no generic netlink family \"" NBD_GENL_FAMILY_NAME
        "\"; modprobe nbd)");
  if (err != 0) die(EXIT_FAIL, "looking up the generic netlink family \"nbd\": %s", strerror(err));
  if (id == 0) die(EXIT_FAIL, "the kernel answered the family lookup without an id");
  return id;
}

static void index_reply(const struct nlattr *attrs, size_t len, void *ctx) {
  FOR_EACH_ATTR(a, attrs, len) {
    if (ATTR_TYPE(a) == NBD_ATTR_INDEX && ATTR_LEN(a) >= 4) memcpy(ctx, ATTR_DATA(a), 4);
  }
}

struct status {
  long long index;
  int found;
  int connected;
};

static void status_reply(const struct nlattr *attrs, size_t len, void *ctx) {
  struct status *s = ctx;
  FOR_EACH_ATTR(list, attrs, len) {
    if (ATTR_TYPE(list) != NBD_ATTR_DEVICE_LIST) continue;
    FOR_EACH_ATTR(item, (const struct nlattr *)ATTR_DATA(list), ATTR_LEN(list)) {
      if (ATTR_TYPE(item) != NBD_DEVICE_ITEM) continue;
      uint32_t index = UINT32_MAX;
      uint8_t connected = 0;
      FOR_EACH_ATTR(f, (const struct nlattr *)ATTR_DATA(item), ATTR_LEN(item)) {
        if (ATTR_TYPE(f) == NBD_DEVICE_INDEX && ATTR_LEN(f) >= 4) memcpy(&index, ATTR_DATA(f), 4);
        if (ATTR_TYPE(f) == NBD_DEVICE_CONNECTED && ATTR_LEN(f) >= 1) memcpy(&connected, ATTR_DATA(f), 1);
      }
      if ((long long)index == s->index) {
        s->found = 1;
        s->connected = connected != 0;
      }
    }
  }
}

static void fail_device(int err, const char *what, long long index) {
  if (err == EBUSY) die(EXIT_BUSY, "%s nbd%lld: the device is busy (in use by another connection)", what, index);
  if (err == EINVAL && strcmp(what, "connect") != 0)
    die(EXIT_NOT_CONFIGURED, "%s nbd%lld: the device is not configured (EINVAL)", what, index);
  if (err == ENOENT || err == ENODEV) die(EXIT_NOT_CONFIGURED, "%s nbd%lld: no such nbd device", what, index);
  if (err == EPERM || err == EACCES)
    die(EXIT_FAIL, "%s nbd%lld: %s (needs CAP_SYS_ADMIN)", what, index, strerror(err));
  die(EXIT_FAIL, "%s nbd%lld: %s", what, index, strerror(err));
}

static void add_sockets(struct msg *m, const int *fds, int count) {
  size_t list = nest_start(m, NBD_ATTR_SOCKETS);
  for (int i = 0; i < count; i++) {
    size_t item = nest_start(m, NBD_SOCK_ITEM);
    put_u32(m, NBD_SOCK_FD, (uint32_t)fds[i]);
    nest_end(m, item);
  }
  nest_end(m, list);
}

/* ---- commands ------------------------------------------------------------------------------- */

static int cmd_connect(const struct options *o) {
  need(o->unix_path != NULL, "connect", "--unix PATH");
  need(o->export_name != NULL, "connect", "--export NAME");
  int nl = genl_socket();
  uint16_t family = nbd_family(nl);
  int fds[MAX_CONNECTIONS];
  struct export_info info = {0};
  for (int i = 0; i < o->connections; i++) {
    struct export_info each;
    fds[i] = nbd_handshake(o->unix_path, o->export_name, &each);
    if (i == 0) info = each;
    else if (each.size != info.size) die(EXIT_SERVER, "the export changed size between connections");
  }
  uint64_t server_flags = info.flags | (o->read_only ? NBD_FLAG_READ_ONLY : 0);
  struct msg m;
  msg_init(&m, family, NBD_CMD_CONNECT, NBD_GENL_VERSION);
  if (o->index >= 0) put_u32(&m, NBD_ATTR_INDEX, (uint32_t)o->index);
  put_u64(&m, NBD_ATTR_SIZE_BYTES, info.size);
  put_u64(&m, NBD_ATTR_BLOCK_SIZE_BYTES, o->block_size);
  put_u64(&m, NBD_ATTR_SERVER_FLAGS, server_flags);
  put_u64(&m, NBD_ATTR_CLIENT_FLAGS, 0); /* the device outlives this process and its sockets */
  if (o->timeout > 0) put_u64(&m, NBD_ATTR_TIMEOUT, o->timeout);
  if (o->dead_conn_timeout > 0) put_u64(&m, NBD_ATTR_DEAD_CONN_TIMEOUT, o->dead_conn_timeout);
  add_sockets(&m, fds, o->connections);
  uint32_t index = UINT32_MAX;
  int err = transact(nl, &m, index_reply, &index);
  if (err != 0) fail_device(err, "connect", o->index);
  if (index == UINT32_MAX) die(EXIT_FAIL, "connect: the kernel did not say which device it used");
  printf("index=%u size=%" PRIu64 " flags=%u\n", index, info.size, (unsigned)server_flags);
  return 0;
}

static int cmd_reconfigure(const struct options *o) {
  need(o->index >= 0, "reconfigure", "--index N");
  need(o->unix_path != NULL, "reconfigure", "--unix PATH");
  need(o->export_name != NULL, "reconfigure", "--export NAME");
  int nl = genl_socket();
  uint16_t family = nbd_family(nl);
  int fds[MAX_CONNECTIONS];
  struct export_info info = {0};
  for (int i = 0; i < o->connections; i++) fds[i] = nbd_handshake(o->unix_path, o->export_name, &info);
  struct msg m;
  msg_init(&m, family, NBD_CMD_RECONFIGURE, NBD_GENL_VERSION);
  put_u32(&m, NBD_ATTR_INDEX, (uint32_t)o->index);
  if (o->dead_conn_timeout_set) put_u64(&m, NBD_ATTR_DEAD_CONN_TIMEOUT, o->dead_conn_timeout);
  add_sockets(&m, fds, o->connections);
  int err = transact(nl, &m, NULL, NULL);
  if (err != 0) fail_device(err, "reconfigure", o->index);
  /* The kernel takes a socket only in place of a dead one and drops the rest (still success). */
  printf("index=%lld size=%" PRIu64 "\n", o->index, info.size);
  return 0;
}

/* A command about one device, by index; the kernel's answer's attributes go to on_reply. */
static void device_command(const struct options *o, uint8_t cmd, const char *name, reply_fn on_reply,
                           void *ctx) {
  need(o->index >= 0, name, "--index N");
  int nl = genl_socket();
  struct msg m;
  msg_init(&m, nbd_family(nl), cmd, NBD_GENL_VERSION);
  put_u32(&m, NBD_ATTR_INDEX, (uint32_t)o->index);
  int err = transact(nl, &m, on_reply, ctx);
  if (err != 0) fail_device(err, name, o->index);
}

static int cmd_disconnect(const struct options *o) {
  device_command(o, NBD_CMD_DISCONNECT, "disconnect", NULL, NULL);
  printf("index=%lld\n", o->index);
  return 0;
}

static int cmd_status(const struct options *o) {
  struct status s = {.index = o->index};
  device_command(o, NBD_CMD_STATUS, "status", status_reply, &s);
  if (!s.found) die(EXIT_NOT_CONFIGURED, "status nbd%lld: no such nbd device", o->index);
  /* "connected": the device holds a configuration (its sockets may be dead and awaiting reconnect). */
  printf("index=%lld connected=%d\n", o->index, s.connected);
  return 0;
}

static int cmd_family(void) {
  int nl = genl_socket();
  printf("family=%u\n", nbd_family(nl));
  return 0;
}

static int cmd_handshake(const struct options *o) {
  need(o->unix_path != NULL, "handshake", "--unix PATH");
  need(o->export_name != NULL, "handshake", "--export NAME");
  struct export_info info;
  int fd = nbd_handshake(o->unix_path, o->export_name, &info);
  /* NBD_OPT_ABORT is only for the negotiation phase; now in transmission, send NBD_CMD_DISC. */
  unsigned char disc[28] = {0};
  uint32_t v = htobe32(NBD_REQUEST_MAGIC);
  memcpy(disc, &v, 4);
  v = htobe32(NBD_CMD_DISC);
  memcpy(disc + 4, &v, 4);
  write_exact(fd, disc, sizeof(disc));
  close(fd);
  printf("size=%" PRIu64 " flags=%u\n", info.size, (unsigned)info.flags);
  return 0;
}

static const char USAGE[] =
    "usage: snapblock-nbd-netlink COMMAND [OPTIONS]\n"
    "  connect --unix PATH --export NAME [--index N] [--block-size B] [--timeout S]\n"
    "          [--dead-conn-timeout S] [--connections N] [--read-only]   prints index=N size=B flags=F\n"
    "  reconfigure --index N --unix PATH --export NAME [--connections N] [--dead-conn-timeout S]\n"
    "  disconnect --index N\n"
    "  status --index N                                                prints index=N connected=0|1\n"
    "  family                                                          prints family=ID\n"
    "  handshake --unix PATH --export NAME                             prints size=B flags=F\n";

int main(int argc, char **argv) {
  if (argc < 2) {
    fputs(USAGE, stderr);
    return EXIT_USAGE;
  }
  const char *command = argv[1];
  if (strcmp(command, "--help") == 0 || strcmp(command, "help") == 0) {
    fputs(USAGE, stdout);
    return 0;
  }
  struct options o;
  parse_options(argc - 2, argv + 2, &o);
  if (strcmp(command, "connect") == 0) return cmd_connect(&o);
  if (strcmp(command, "reconfigure") == 0) return cmd_reconfigure(&o);
  if (strcmp(command, "disconnect") == 0) return cmd_disconnect(&o);
  if (strcmp(command, "status") == 0) return cmd_status(&o);
  if (strcmp(command, "handshake") == 0) return cmd_handshake(&o);
  if (strcmp(command, "family") == 0) {
    if (argc > 2) die(EXIT_USAGE, "family takes no options");
    return cmd_family();
  }
  fputs(USAGE, stderr);
  die(EXIT_USAGE, "unknown command %s", command);
}
