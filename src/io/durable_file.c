#include "io/durable_file.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

void path_directory(const char *path, char *dir, size_t size) {
    const char *slash = strrchr(path, '/');
    if (!slash) snprintf(dir, size, ".");
    else if (slash == path) snprintf(dir, size, "/");
    else snprintf(dir, size, "%.*s", (int)(slash - path), path);
}

void durable_publish(const char *tmp, const char *path, const char *what, const char *advice, char *message,
                     size_t size) {
    message[0] = '\0';
    int fd = open(tmp, O_RDONLY);
    if (fd < 0 || fsync(fd) != 0) {
        snprintf(message, size, "cannot flush %s %s to disk: %s%s%s", what, tmp, strerror(errno),
                 advice ? "; " : "", advice ? advice : "");
        if (fd >= 0) close(fd);
        unlink(tmp);
        return;
    }
    close(fd);
    if (rename(tmp, path) != 0) {
        snprintf(message, size, "cannot rename %s %s to %s: %s", what, tmp, path, strerror(errno));
        unlink(tmp);
        return;
    }
    char dir[4096];
    path_directory(path, dir, sizeof dir);
    fd = open(dir, O_RDONLY | O_DIRECTORY);
    if (fd >= 0) {
        fsync(fd);  // best effort: some file systems refuse fsync on directories
        close(fd);
    }
}
