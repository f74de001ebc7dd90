// Running a child program from a test (often `mpirun --oversubscribe -np N <self> ...`) and
// collecting what it wrote. Children get the environment the test started with when it
// kept one before MPI_Init (Open MPI will not launch from an environment MPI_Init has
// added to), else the current one, plus the variables that let Open MPI run as root.
#pragma once
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/types.h>
#include <sys/wait.h>
#include <unistd.h>

#include "core/errors.h"

extern char **environ;

static char **child_environment;  // set by child_keep_environment; NULL: use environ

// Call at the start of main, before MPI_Init, in programs that launch mpirun.
static inline void child_keep_environment(void) {
    size_t count = 0;
    while (environ[count]) count++;
    child_environment = xmalloc((count + 1) * sizeof *child_environment);
    for (size_t i = 0; i < count; i++) child_environment[i] = xstrdup(environ[i]);
    child_environment[count] = NULL;
}

// Which of the child's streams come back through the pipe; the others stay the test's.
enum { CHILD_STDOUT = 1, CHILD_STDERR = 2 };

// Starts argv (found on PATH) with the streams in `streams` redirected to a pipe whose
// read end goes to *output_fd; with streams 0 nothing is redirected and output_fd unused.
static inline pid_t child_spawn(const char *const *argv, int streams, int *output_fd) {
    char **base = child_environment ? child_environment : environ;
    size_t count = 0;
    while (base[count]) count++;
    const char **env = xmalloc((count + 3) * sizeof *env);
    size_t n = 0;
    for (size_t i = 0; i < count; i++)
        if (strncmp(base[i], "OMPI_ALLOW_RUN_AS_ROOT", 22) != 0) env[n++] = base[i];
    env[n++] = "OMPI_ALLOW_RUN_AS_ROOT=1";
    env[n++] = "OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1";
    env[n] = NULL;
    int fds[2];
    if (streams && pipe(fds) != 0) fatal("pipe failed");
    fflush(NULL);  // or the child's copy of unflushed output would be written twice
    pid_t pid = fork();
    if (pid < 0) fatal("fork failed");
    if (pid == 0) {
        if (streams) {
            close(fds[0]);
            if (streams & CHILD_STDOUT) dup2(fds[1], STDOUT_FILENO);
            if (streams & CHILD_STDERR) dup2(fds[1], STDERR_FILENO);
            close(fds[1]);
        }
        execvpe(argv[0], (char *const *)argv, (char *const *)env);
        _exit(127);
    }
    free(env);
    if (streams) {
        close(fds[1]);
        *output_fd = fds[0];
    }
    return pid;
}

typedef struct {
    int status;            // waitpid status
    char output[1 << 16];  // what the captured streams held, cut to fit, NUL-terminated
} child_result;

// Runs argv to completion, capturing `streams` (not 0). Output past the buffer is read and
// dropped, so a talkative child never blocks on a full pipe.
static inline child_result child_run(const char *const *argv, int streams) {
    child_result result = {0};
    int fd = -1;
    pid_t pid = child_spawn(argv, streams, &fd);
    size_t used = 0;
    char discard[4096];
    for (;;) {
        int room = used + 1 < sizeof result.output;
        ssize_t got = read(fd, room ? result.output + used : discard,
                           room ? sizeof result.output - 1 - used : sizeof discard);
        if (got <= 0) break;
        if (room) used += (size_t)got;
    }
    close(fd);
    result.output[used] = '\0';
    waitpid(pid, &result.status, 0);
    return result;
}
