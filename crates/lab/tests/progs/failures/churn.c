/* churn: keeps changing its memory as fast as it can, so that a move's first round (sent
 * while it runs) is stale by the time the process freezes, and checks on SIGUSR1 that its
 * memory is exactly what it wrote.
 *
 * It owns MIB mebibytes of pages, a set of small mappings it maps, unmaps and re-protects,
 * and a heap tail it grows and shrinks with sbrk. Every page it owns holds its tag (or
 * zeros, tag 0) in every word; the tags live in the heap, so a page restored from an older
 * round disagrees with them. Changes: pages rewritten, zeroed by hand, zapped with
 * MADV_DONTNEED; mappings come and go, are mapped anew (empty) where they were, and flip
 * between read-only and read-write; the heap tail moves.
 *
 * Prints "ready", then, on each SIGUSR1, "verified N" (N: changes so far) or "corrupt ..."
 * and exits 1. Exits 0 once GOFILE exists.
 * usage: churn MIB GOFILE */
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#define PAGE 4096
#define WORDS (PAGE / 8)
#define SLOTS 16
#define SLOT_PAGES 8
#define HEAP_PAGES 64

static volatile sig_atomic_t check_now;
static uint64_t *pages, *page_tag;
static size_t npages;
static uint64_t *slot[SLOTS], slot_tag[SLOTS];
static int slot_writable[SLOTS];
static uint64_t *heap_tail, heap_tag[HEAP_PAGES];
static size_t heap_len; /* pages of the tail now in use */
static uint64_t rng = 0x2545f4914f6cdd1dull;

static uint64_t next(void) {
    rng ^= rng << 13;
    rng ^= rng >> 7;
    rng ^= rng << 17;
    return rng;
}

static void fill(uint64_t *page, uint64_t tag, size_t n) {
    for (size_t i = 0; i < n * WORDS; i++)
        page[i] = tag;
}

static int holds(const uint64_t *page, uint64_t tag, size_t n) {
    for (size_t i = 0; i < n * WORDS; i++)
        if (page[i] != tag)
            return 0;
    return 1;
}

static void on_usr1(int sig) {
    (void)sig;
    check_now = 1;
}

static int verify(unsigned long changes) {
    for (size_t i = 0; i < npages; i++)
        if (!holds(pages + i * WORDS, page_tag[i], 1)) {
            printf("corrupt page %zu (tag %llx)\n", i, (unsigned long long)page_tag[i]);
            return 0;
        }
    for (int s = 0; s < SLOTS; s++)
        if (slot[s] && !holds(slot[s], slot_tag[s], SLOT_PAGES)) {
            printf("corrupt slot %d\n", s);
            return 0;
        }
    for (size_t i = 0; i < heap_len; i++)
        if (!holds(heap_tail + i * WORDS, heap_tag[i], 1)) {
            printf("corrupt heap page %zu\n", i);
            return 0;
        }
    printf("verified %lu\n", changes);
    return 1;
}

/* One change of one kind, picked at random. */
static void change(uint64_t tag) {
    uint64_t r = next();
    size_t i = (size_t)(r >> 8) % npages;
    int s = (int)((r >> 40) % SLOTS);
    switch (r % 10) {
    case 0: /* zap */
        madvise(pages + i * WORDS, PAGE, MADV_DONTNEED);
        page_tag[i] = 0;
        break;
    case 1: /* zeros written by hand */
        fill(pages + i * WORDS, 0, 1);
        page_tag[i] = 0;
        break;
    case 2: /* a mapping comes or goes, or is mapped anew, empty, where it was */
        if (slot[s] && (r & 0x200)) {
            if (mmap(slot[s], SLOT_PAGES * PAGE, PROT_READ | PROT_WRITE,
                     MAP_PRIVATE | MAP_ANONYMOUS | MAP_FIXED, -1, 0) == MAP_FAILED) {
                perror("churn: mmap");
                exit(2);
            }
            slot_writable[s] = 1;
            slot_tag[s] = 0;
        } else if (slot[s]) {
            munmap(slot[s], SLOT_PAGES * PAGE);
            slot[s] = NULL;
        } else {
            slot[s] = mmap(NULL, SLOT_PAGES * PAGE, PROT_READ | PROT_WRITE,
                           MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
            if (slot[s] == MAP_FAILED) {
                perror("churn: mmap");
                exit(2);
            }
            slot_writable[s] = 1;
            slot_tag[s] = tag;
            fill(slot[s], tag, SLOT_PAGES);
        }
        break;
    case 3: /* a mapping flips between read-only and read-write */
        if (slot[s]) {
            slot_writable[s] = !slot_writable[s];
            mprotect(slot[s], SLOT_PAGES * PAGE,
                     slot_writable[s] ? PROT_READ | PROT_WRITE : PROT_READ);
        }
        break;
    case 4: /* the heap tail grows or shrinks by a page */
        if (heap_len < HEAP_PAGES && (r & 0x100)) {
            if (sbrk(PAGE) == (void *)-1) {
                perror("churn: sbrk");
                exit(2);
            }
            heap_tag[heap_len] = tag;
            fill(heap_tail + heap_len * WORDS, tag, 1);
            heap_len++;
        } else if (heap_len > 0) {
            sbrk(-PAGE);
            heap_len--;
        }
        break;
    default: /* a page rewritten */
        fill(pages + i * WORDS, tag, 1);
        page_tag[i] = tag;
    }
}

int main(int argc, char **argv) {
    if (argc != 3) {
        fprintf(stderr, "usage: churn MIB GOFILE\n");
        return 2;
    }
    /* Unbuffered: stdio must not malloc, so that the heap's end is ours alone. */
    setvbuf(stdout, NULL, _IONBF, 0);
    npages = (size_t)atol(argv[1]) * 256;
    pages = mmap(NULL, npages * PAGE, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    page_tag = calloc(npages, sizeof *page_tag);
    if (pages == MAP_FAILED || !page_tag) {
        perror("churn: memory");
        return 2;
    }
    for (size_t i = 0; i < npages; i++) {
        page_tag[i] = i + 1;
        fill(pages + i * WORDS, i + 1, 1);
    }
    /* The heap tail starts on a page boundary of its own. */
    uintptr_t brk_now = (uintptr_t)sbrk(0);
    sbrk((intptr_t)((PAGE - brk_now % PAGE) % PAGE));
    heap_tail = sbrk(0);
    signal(SIGUSR1, on_usr1);
    printf("ready\n");
    unsigned long changes = 0;
    for (;;) {
        if (check_now) {
            check_now = 0;
            if (!verify(changes))
                return 1;
        }
        for (int k = 0; k < 1000; k++)
            change(++changes * 0x9e3779b97f4a7c15ull | 1);
        if (changes % 100000 == 0 && access(argv[2], F_OK) == 0)
            break;
    }
    return verify(changes) ? 0 : 1;
}
