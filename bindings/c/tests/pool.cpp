// The pool through the C++17 wrapper (model_manager.hpp): mm::Pool, its
// leases (mm::Lease, read as a manager's), errors as mm::Error with their
// codes, a reload that keeps an old lease readable, moves, a lease that
// outlives its pool, and threads sharing one pool. Run by bindings/c/test.sh
// under ASan/UBSan/LSan.
#include <atomic>
#include <string>
#include <thread>
#include <vector>

#include "common.h"
#include "model_manager.hpp"

namespace {

constexpr std::size_t kTensors = 4;
constexpr std::size_t kElems = 2048;
constexpr std::uint64_t kModel = kTensors * kElems * sizeof(float);

std::string dir;

std::string path(const std::string &name) { return dir + "/" + name; }

// `f` throws an mm::Error with `code`.
template <typename F>
void check_throws(F &&f, mm_result code) {
    try {
        f();
    } catch (const mm::Error &e) {
        if (e.code() != code) {
            std::fprintf(stderr, "threw %s (%s), expected %s\n", e.code_name(), e.what(),
                         mm_result_name(code));
            std::abort();
        }
        return;
    }
    std::fprintf(stderr, "did not throw %s\n", mm_result_name(code));
    std::abort();
}

bool matches(const mm::Lease &lease, unsigned seed) {
    return mm_test_lease_matches(lease.get(), seed, kTensors, kElems) != 0;
}

void budget_for_one() {
    mm::PoolOptions options;
    options.memory_budget = kModel + kModel / 2;
    options.drain_timeout = std::chrono::milliseconds(300);
    options.admission_timeout = std::chrono::milliseconds(100);
    options.retry_cooldown = std::chrono::milliseconds(0);
    // A host tier is a device pool's.
    mm::PoolOptions tiered = options;
    tiered.host_budget = kModel;
    check_throws([&] { mm::Pool refused(tiered); }, MM_RESULT_INVALID_ARGUMENT);
    mm::Pool pool(options);
    pool.add("a", path("a"));
    pool.add("b", path("b"));
    check_throws([&] { pool.add("a", path("a")); }, MM_RESULT_INVALID_ARGUMENT);
    check_throws([&] { pool.acquire("nope"); }, MM_RESULT_UNKNOWN_MODEL);
    check_throws([&] { pool.status("nope"); }, MM_RESULT_UNKNOWN_MODEL);
    CHECK(!pool.try_acquire("a"));

    mm::Lease a = pool.acquire("a");
    CHECK(a.version() == 1 && matches(a, 1));
    CHECK(pool.status("a").state == MM_STATE_READY);
    // b needs a's memory, which a's lease holds: the load gives up.
    check_throws([&] { pool.acquire("b", std::chrono::seconds(30)); }, MM_RESULT_MEMORY_BUSY);
    CHECK(pool.status("b").last_error == MM_RESULT_MEMORY_BUSY);
    CHECK(pool.error_message("b")->find("\"a\"") != std::string::npos);
    CHECK(!pool.error_message("a"));
    a.release();

    mm::Lease b = pool.acquire("b");  // evicts a
    CHECK(matches(b, 2) && pool.status("a").version == 0);
    CHECK(pool.stats().evictions == 1);
    // Beside b, room for a reserve of a quarter of a model, not a whole one.
    b.release();
    {
        mm::Lease with = pool.acquire_with("b", kModel / 4);
        CHECK(matches(with, 2) && pool.stats().charged == kModel + kModel / 4);
        check_throws([&] { pool.acquire_with("b", kModel); }, MM_RESULT_INSUFFICIENT_MEMORY);
    }
    CHECK(pool.stats().charged == kModel);
    b = pool.acquire("b");

    // Unload first: the new version waits for b's lease, which stays
    // readable; then new leases get it.
    check_throws([&] {
        pool.reload("b", path("b2"), MM_RELOAD_POLICY_UNLOAD_FIRST, std::chrono::milliseconds(50));
    }, MM_RESULT_TIMEOUT);
    CHECK(matches(b, 2) && b.version() == 2);  // version 1 was the load that gave up
    b.release();
    mm::Lease b2 = pool.acquire("b");
    CHECK(matches(b2, 3) && b2.version() > 2);
    CHECK(b2.tensor("t1").data_len == kElems * sizeof(float));
    CHECK(!pool.cancel("b"));

    // Moves keep one owner; the lease outlives the pool.
    mm::Pool moved(std::move(pool));
    CHECK(pool.get() == nullptr && moved.get() != nullptr);
    CHECK(moved.metrics_text().find("model_manager_pool_evictions_total 1") != std::string::npos);
    moved = mm::Pool(options);  // destroys the first pool
    CHECK(matches(b2, 3));
    b2.release();
    check_throws([&] { moved.acquire("b"); }, MM_RESULT_UNKNOWN_MODEL);
}

void threads() {
    mm::PoolOptions options;
    options.memory_budget = 2 * kModel + kModel / 2;
    options.concurrent_loads = 2;
    mm::Pool pool(options);
    const char *ids[4] = {"a", "b", "b2", "c"};
    for (const char *id : ids) pool.add(id, path(id));
    std::atomic<int> done{0};
    std::vector<std::thread> workers;
    for (unsigned t = 0; t < 4; t++) {
        workers.emplace_back([&pool, &done, &ids, t] {
            unsigned seed = 99 + t;
            for (int r = 0; r < 25; r++) {
                unsigned m = static_cast<unsigned>(rand_r(&seed)) % 4;
                mm::Lease lease = pool.acquire(ids[m], std::chrono::seconds(60));
                CHECK(matches(lease, m + 1));  // a, b, b2, c have seeds 1 to 4
                done++;
            }
        });
    }
    for (auto &w : workers) w.join();
    CHECK(done == 100);
    mm_pool_totals t = pool.stats();
    CHECK(t.charged <= t.budget && t.failures == 0);
}

}  // namespace

int main() {
    char tmp[1024];
    mm_test_tempdir(tmp, sizeof tmp);
    dir = tmp;
    const char *names[4] = {"a", "b", "b2", "c"};
    for (unsigned i = 0; i < 4; i++)
        mm_test_write_model_seeded(path(names[i]).c_str(), kTensors, kElems, 64, i + 1);
    try {
        budget_for_one();
        std::printf("ok budget for one\n");
        threads();
        std::printf("ok threads\n");
    } catch (const mm::Error &e) {
        std::fprintf(stderr, "unexpected %s: %s\n", e.code_name(), e.what());
        return 1;
    }
    mm_test_rmtree(tmp);
    std::printf("pool.cpp: all checks passed\n");
    return 0;
}
